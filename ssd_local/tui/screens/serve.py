"""Serve panel: start and stop the OpenAI-compatible endpoint for a run or a GGUF, show
its URL and ready-to-paste client settings, its busy slots and tokens/s (the handle's
``stats()``, read from the engine's ``/metrics`` once a second off the UI thread), and
chat with it (the real ``openai`` client, streaming). The core's ``ServerHandle`` serves;
the app starts and stops it on request (``StartServer``, ``StopServer``) and tells this
panel which handle is current, at creation and with ``ServerChanged``."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, TextArea

from ...app.serve_engine import ServeStats
from ...app.serving import ServerHandle, servable
from ...config import ServeConfig
from ..forms import ConfigForm, build_config
from ..messages import ServerChanged, StartServer, StopServer


class ServeScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("ctrl+y", "copy", "Copy snippet")]

    def __init__(self, handle: ServerHandle | None = None) -> None:
        super().__init__()
        self.handle = handle  # the app's endpoint: loading, serving, or None
        self.history: list[dict[str, str]] = []  # the conversation, sent with each turn
        self.max_tokens = 512
        self.stats: ServeStats | None = None  # the latest reading of /metrics

    @property
    def serving(self) -> ServerHandle | None:
        """The handle, when it answers requests."""
        return self.handle if self.handle is not None and self.handle.running else None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="serve"):
            with VerticalScroll(id="serve-left"):
                yield Static("Endpoint", classes="section")
                with Horizontal(classes="field-line"):
                    yield Label("model", classes="field-label")
                    yield Select([(f"{name} ({kind})", name) for name, kind, _ in servable()],
                                 id="serve-target", prompt="a run with GGUFs, or a GGUF",
                                 compact=True)
                yield ConfigForm(ServeConfig, "serve-", only=("host", "port", "quant",
                                                              "api_key", "slots"))
                with Horizontal(id="serve-actions"):
                    yield Button("Start", id="serve-start", variant="success")
                    yield Button("Stop", id="serve-stop", variant="error", disabled=True)
                yield Static("not serving", id="serve-status")
                yield Static("", id="serve-stats")
                yield TextArea("", id="snippets", read_only=True, language=None)
            with Vertical(id="chat"):
                yield Static("Chat playground", classes="section")
                yield VerticalScroll(id="chat-log")
                yield Input(placeholder="ask the model (enter sends)", id="chat-input",
                            disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "serve"
        self.show_server()
        self.set_interval(1.0, self.poll_stats)

    def poll_stats(self) -> None:
        if self.serving is not None:
            self.read_stats(self.serving)

    @work(thread=True, exclusive=True, group="serve-stats", exit_on_error=False)
    def read_stats(self, handle: ServerHandle) -> None:
        stats = handle.stats()  # an HTTP request to the engine: never on the UI thread
        self.app.call_from_thread(self.show_stats, stats)

    def show_stats(self, stats: ServeStats | None) -> None:
        self.stats = stats
        self.query_one("#serve-stats", Static).update(
            Text(stats.describe(), style="cyan") if stats is not None and self.serving
            else Text(""))

    def show_server(self, error: str = "") -> None:
        ep, running = self.handle, self.serving is not None
        status = self.query_one("#serve-status", Static)
        if ep is not None and running:
            lay = ep.layout  # read by the start, so no engine import here
            status.update(Text.assemble(("serving ", "green"), (ep.model_id, "bold"),
                                        " at ", (ep.base_url, "bold underline"),
                                        f"\n{lay.slots} slots on {lay.device}; tools "
                                        + ("taken" if lay.tools else "refused (400)")))
            self.query_one("#snippets", TextArea).text = "\n\n".join(
                f"# {title}\n{text}" for title, text in ep.snippets.items()
                if title != "base_url")
        elif ep is not None:
            status.update(Text(f"loading {ep.target}…", style="yellow"))
        else:
            status.update(Text(error, style="red") if error else Text("not serving",
                                                                        style="dim"))
        self.query_one("#serve-start", Button).disabled = ep is not None
        self.query_one("#serve-stop", Button).disabled = not running
        self.query_one("#chat-input", Input).disabled = not running

    @on(Button.Pressed, "#serve-start")
    def start(self) -> None:
        target = self.query_one("#serve-target", Select).value
        cfg, _ = build_config(self, ServeConfig)
        if not isinstance(target, str) or cfg is None:
            self.notify("pick a model and fix the fields marked in red", severity="warning")
            return
        self.query_one("#serve-start", Button).disabled = True
        self.query_one("#serve-status", Static).update(Text(f"loading {target}…",
                                                            style="yellow"))
        self.post_message(StartServer(target, cfg))

    @on(Button.Pressed, "#serve-stop")
    def stop(self) -> None:
        self.post_message(StopServer())

    def on_server_changed(self, message: ServerChanged) -> None:
        self.handle = message.handle
        self.show_server(message.error)

    @on(Input.Submitted, "#chat-input")
    def send(self, event: Input.Submitted) -> None:
        ep = self.serving
        text = event.value.strip()
        if not text or ep is None:
            return
        event.input.value = ""
        log = self.query_one("#chat-log", VerticalScroll)
        log.mount(Static(Text.assemble(("you ", "bold cyan"), text), classes="chat-user"))
        reply = Static("…", classes="chat-model")
        log.mount(reply)
        self.history.append({"role": "user", "content": text})
        self.stream_reply(ep.base_url, ep.model_id, ep.cfg.api_key,
                          list(self.history), reply)

    @work(thread=True, group="chat", exit_on_error=False)
    def stream_reply(self, base_url: str, model: str, key: str | None,
                     messages: list[dict[str, str]], reply: Static) -> None:
        """Streams through the real OpenAI client, as any user of the endpoint would."""
        from openai import OpenAI

        client = OpenAI(base_url=base_url, api_key=key or "none")
        answer = ""
        try:
            stream = client.chat.completions.create(
                model=model, messages=messages, stream=True,  # type: ignore[arg-type]
                max_tokens=self.max_tokens)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    answer += chunk.choices[0].delta.content
                    self.app.call_from_thread(reply.update, Text.assemble(
                        (f"{model} ", "bold green"), answer))
        except Exception as exc:  # a stopped server, a refused key: say it in the chat
            self.app.call_from_thread(reply.update, Text(f"error: {exc}", style="red"))
            return
        finally:  # close our side first, so stopping the server leaves its port free
            client.close()
        self.history.append({"role": "assistant", "content": answer})
        self.app.call_from_thread(self.query_one("#chat-log", VerticalScroll).scroll_end)

    def action_copy(self) -> None:
        ep = self.serving
        if ep is not None:
            self.app.copy_to_clipboard(ep.snippets["openai-python"])
            self.notify("copied the openai-python snippet")
