"""The Textual app: screens, global bindings, the command palette, and the one place
where workers meet the UI thread.

Long work runs in thread workers: a job (a distillation, a comparison) calls the core with
an ``EventSink`` as ``on_event`` and its own ``threading.Event`` as ``cancel``; the sink
hands events to the UI thread in batches. The endpoint runs in a thread of its own."""

from __future__ import annotations

import traceback
from typing import Iterable

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from ..app.errors import Cancelled, UserError
from ..app.events import Log
from ..app.inventory import Hardware
from .jobs import EventSink, Job, resume_job
from .messages import EventsPending, JobEnded, ServerChanged
from .screens.dashboard import DashboardScreen
from .screens.home import HomeScreen
from .screens.serve import Endpoint, ServeScreen


class ConfirmQuit(ModalScreen[bool]):
    """Asked before quitting while a run or the endpoint is active."""

    BINDINGS = [Binding("y", "answer(True)", "Quit"), Binding("n", "answer(False)", "Stay"),
                Binding("escape", "answer(False)", "Stay")]

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(f"{self.what}\n\nQuit anyway? A run stops at a safe point and stays "
                         "resumable.", id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button("Quit (y)", id="yes", variant="error")
                yield Button("Stay (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)


class SSDApp(App[None]):
    """``hardware`` skips detection (tests pin it so screenshots do not depend on the
    machine)."""

    CSS_PATH = "ssd.tcss"
    TITLE = "ssd-local"
    SUB_TITLE = "simple self-distillation for code models"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("n", "new_run", "New run"),
        Binding("d", "dashboard", "Dashboard"),
        Binding("e", "evals", "Evals"),
        Binding("v", "serve", "Serve"),
        Binding("h", "home", "Home"),
    ]

    def __init__(self, hardware: Hardware | None = None):
        super().__init__()
        self.hardware = hardware
        self.job: Job | None = None
        self.endpoint: Endpoint | None = None
        self.sink = EventSink(lambda: self.post_message(EventsPending()))
        self.quitting = False

    def on_mount(self) -> None:
        self.install_screen(DashboardScreen(), "dashboard")
        self.push_screen(HomeScreen())

    # -- navigation ------------------------------------------------------------------------
    def goto(self, screen: Screen | str) -> None:
        """Show ``screen`` on top of Home (the stack never grows beyond two)."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.push_screen(screen)

    def action_home(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_new_run(self, model: str | None = None) -> None:
        from .screens.distill import DistillScreen

        self.goto(DistillScreen(model))

    def action_dashboard(self) -> None:
        self.goto("dashboard")

    def action_evals(self) -> None:
        from .screens.evals import EvalsScreen

        self.goto(EvalsScreen())

    def action_serve(self) -> None:
        self.goto(ServeScreen())

    def open_samples(self, run: str) -> None:
        from .screens.samples import SamplesScreen

        try:
            self.goto(SamplesScreen(run))
        except UserError as exc:
            self.notify(str(exc), severity="error")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New distillation", "Sample, train, fuse and export a model",
                            self.action_new_run)
        yield SystemCommand("Dashboard", "Progress of the current run", self.action_dashboard)
        yield SystemCommand("Evaluations", "Base vs tuned pass@1, eval summaries",
                            self.action_evals)
        yield SystemCommand("Serve", "OpenAI-compatible endpoint and chat",
                            self.action_serve)
        yield SystemCommand("Home", "Runs, models and hardware", self.action_home)

    # -- jobs --------------------------------------------------------------------------------
    def start_job(self, job: Job) -> None:
        """Start ``job`` (or resume it: the same core call again) and show the dashboard."""
        if self.job is not None and self.job.active:
            self.notify(f"{self.job.title} is still running; cancel it first",
                        severity="warning")
            return
        self.job = job
        job.begin()
        self.goto("dashboard")
        self.run_job(job)

    def resume_run(self, run: str) -> None:
        try:
            self.start_job(resume_job(run))
        except (UserError, KeyError) as exc:
            self.notify(f"cannot resume run {run}: {exc}", severity="error")

    @work(thread=True, group="job", exit_on_error=False)
    def run_job(self, job: Job) -> None:
        try:
            result = job.call(self.sink, job.cancel)
            ended = JobEnded(job, "done", result)
        except Cancelled as exc:
            ended = JobEnded(job, "cancelled", error=str(exc))
        except UserError as exc:
            ended = JobEnded(job, "failed", error=str(exc))
        except Exception as exc:  # shown in the log with its traceback, never a crash
            self.sink(Log(traceback.format_exc().rstrip()))
            ended = JobEnded(job, "failed", error=f"{type(exc).__name__}: {exc}")
        self.post_message(ended)

    def on_events_pending(self, _: EventsPending) -> None:
        self.drain_events()

    def drain_events(self) -> None:
        events = self.sink.drain()
        if not events or self.job is None:
            return
        for e in events:
            self.job.view.apply(e)
        dash = self.get_screen("dashboard")
        if self.screen is dash:
            dash.redraw(events)  # type: ignore[attr-defined]

    def on_job_ended(self, message: JobEnded) -> None:
        self.drain_events()
        message.job.ended(message.state, message.result, message.error)
        dash = self.get_screen("dashboard")
        if self.screen is dash:
            dash.job_ended(message.job)  # type: ignore[attr-defined]
        else:
            self.notify(f"{message.job.title}: {message.state}",
                        severity="error" if message.state == "failed" else "information")
            if isinstance(self.screen, HomeScreen):
                self.screen.refresh_data()
        if self.quitting:
            self.finish_quit()

    # -- the endpoint --------------------------------------------------------------------------
    def start_endpoint(self, endpoint: Endpoint) -> None:
        self.stop_endpoint()
        self.endpoint = endpoint
        self._start_endpoint(endpoint)

    @work(thread=True, group="endpoint", exclusive=True, exit_on_error=False)
    def _start_endpoint(self, endpoint: Endpoint) -> None:
        try:
            url = endpoint.start()
            message = ServerChanged(url)
        except (UserError, RuntimeError, OSError) as exc:
            message = ServerChanged(None, str(exc))
        self.call_from_thread(self._server_changed, message)

    def stop_endpoint(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
            self._server_changed(ServerChanged(None))

    def _server_changed(self, message: ServerChanged) -> None:
        if message.error:
            self.endpoint = None
        for screen in self.screen_stack:
            if isinstance(screen, ServeScreen):
                screen.post_message(message)

    # -- quitting -----------------------------------------------------------------------------
    async def action_quit(self) -> None:
        busy = []
        if self.job is not None and self.job.active:
            busy.append(f"{self.job.title} is running.")
        if self.endpoint is not None and self.endpoint.running:
            busy.append("The endpoint is serving.")
        if not busy:
            self.exit()
            return

        def answered(quit_: bool | None) -> None:
            if quit_:
                self.quitting = True
                if self.job is not None and self.job.active:
                    self.job.request_cancel()
                    self.notify("stopping at a safe point…")
                else:
                    self.finish_quit()

        self.push_screen(ConfirmQuit(" ".join(busy)), answered)

    def finish_quit(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
        self.exit()


def create_app(hardware: Hardware | None = None) -> SSDApp:
    """The one way to build the app: ``ssd-local`` and the tests both call this."""
    return SSDApp(hardware=hardware)
