"""The live dashboard of the current job: stage stepper, a progress bar per stage with its
rate and ETA, the loss curves, the newest samples and the log. It draws the ``JobView``
the app folds events into; Cancel and Resume act on the job."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, ProgressBar, RichLog, Static

from ...app import events as ev
from ..jobs import Job, StageView, format_metrics
from ..widgets import Chart, Series, stage_text

if TYPE_CHECKING:
    from ..app import SSDApp


def sample_renderable(s: dict) -> Group:
    """A sample as the user should read it: its flags and token counts, then the answer,
    highlighted (markdown with fenced code, or plain Python)."""
    flags = [f for f in (s.get("degenerate"), "looped" if s.get("looped") else None,
                         "cut at max tokens" if s.get("finish_reason") == "length" else None,
                         "code block" if s.get("has_code") else "no code block") if f]
    head = Text(f"{s.get('prompt_id')}#{s.get('sample_index')}  ", style="bold")
    head.append(f"{s.get('prompt_tokens', '?')} prompt + {s.get('completion_tokens', '?')} "
                f"answer tokens  {', '.join(flags)}", style="dim")
    text = s.get("completion", "")
    lexer = "markdown" if "```" in text else "python"
    return Group(head, Syntax(text or "(empty)", lexer, theme="monokai", word_wrap=True,
                              background_color="default"))


class StageBar(Horizontal):
    """One stage: its name, a bar with ETA, and the rate the core measured."""

    def __init__(self, view: StageView):
        super().__init__(classes="stage-bar")
        self.view = view

    def compose(self) -> ComposeResult:
        yield Label(self.view.name, classes="stage-name")
        yield ProgressBar(show_eta=True)
        yield Label("", classes="stage-rate")

    def on_mount(self) -> None:
        self.show(self.view)

    def show(self, view: StageView) -> None:
        self.view = view
        if self.is_mounted:
            self.query_one(ProgressBar).update(total=view.total, progress=view.done)
            self.query_one(".stage-rate", Label).update(format_metrics(view.metrics)
                                                        or view.detail)


class DashboardScreen(Screen[None]):
    BINDINGS = [Binding("c", "cancel", "Cancel"), Binding("r", "resume", "Resume"),
                Binding("s", "samples", "Samples"),
                Binding("escape", "app.pop_screen", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.bars: dict[str, StageBar] = {}
        self.shown: Job | None = None

    @property
    def ssd(self) -> "SSDApp":
        return cast("SSDApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="dash"):
            with Horizontal(id="dash-top"):
                yield Static("", id="job-title")
                yield Button("Cancel (c)", id="cancel", variant="error")
                yield Button("Resume (r)", id="resume", variant="success")
            yield Static("", id="stepper")
            yield Vertical(id="bars")
            with Horizontal(id="dash-middle"):
                with Vertical(id="loss-box"):
                    yield Static("loss (train, val) by step", classes="section")
                    yield Chart(y_format="{:.3f}", id="loss")
                with Vertical(id="samples-box"):
                    yield Static("newest samples", classes="section")
                    yield VerticalScroll(Static("", id="newest"), id="newest-scroll")
            yield RichLog(id="log", markup=True, wrap=True, max_lines=2000)
        yield Footer()

    def on_screen_resume(self) -> None:
        self.redraw(full=True)

    @property
    def job(self) -> Job | None:
        return self.ssd.job

    def redraw(self, events: list[ev.Event] | None = None, full: bool = False) -> None:
        """Bring the widgets up to the job's state; ``events`` only decides what is new for
        the log (everything else is redrawn from the view)."""
        job = self.job
        title = self.query_one("#job-title", Static)
        if job is None:
            title.update("No job yet: press [b]n[/] for a new distillation.")
            return
        state_style = {"done": "green", "failed": "red", "cancelled": "magenta"}
        title.update(Text.assemble((job.title, "bold"), (f"  run {job.run}" if job.run
                                                         else "", ""),
                                   (f"  {job.state}", state_style.get(job.state, "yellow"))))
        self.query_one("#cancel", Button).disabled = job.state != "running"
        self.query_one("#resume", Button).disabled = job.state not in ("cancelled", "failed")
        v = job.view
        self.query_one("#stepper", Static).update(
            stage_text({n: s.state for n, s in v.stages.items()}))
        if job is not self.shown:  # another job: its own bars
            for bar in self.bars.values():
                bar.remove()
            self.bars, self.shown = {}, job
        for name, s in v.stages.items():
            if name in self.bars:
                self.bars[name].show(s)
            else:
                self.bars[name] = StageBar(s)
                self.query_one("#bars", Vertical).mount(self.bars[name])
        self.query_one("#loss", Chart).series = [
            Series("train", tuple(v.train_loss), "cyan"),
            Series("val", tuple(v.val_loss), "magenta")]
        self.query_one("#newest", Static).update(
            Group(*(sample_renderable(s) for s in reversed(v.samples))) if v.samples
            else Text("samples appear here as they are written", style="dim"))
        log = self.query_one("#log", RichLog)
        if full:
            log.clear()
            for line in v.logs:
                log.write(line)
            if job.error:
                log.write(f"[red]{job.error}[/]")
        elif events:
            for e in events:
                if isinstance(e, ev.Warning):
                    log.write(f"[yellow]warning:[/] {e.message}")
                elif isinstance(e, ev.Log):
                    log.write(e.message)

    def job_ended(self, job: Job) -> None:
        log = self.query_one("#log", RichLog)
        if job.state == "done":
            log.write(f"[green]finished[/]: {job.title}")
        elif job.state == "cancelled":
            log.write(f"[magenta]cancelled[/]: {job.error}; the run stays resumable, press "
                      "[b]r[/] to resume")
        else:
            log.write(f"[red]failed[/]: {job.error}")
        self.redraw()

    def action_cancel(self) -> None:
        if self.job and self.job.state == "running":
            self.job.request_cancel()
            self.query_one("#log", RichLog).write(
                "[yellow]stopping at a safe point; the run stays resumable[/]")
            self.redraw()

    def action_resume(self) -> None:
        if self.job and self.job.state in ("cancelled", "failed"):
            self.ssd.start_job(self.job)

    def action_samples(self) -> None:
        if self.job and self.job.run:
            self.ssd.open_samples(self.job.run)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#resume")
    def _resume(self) -> None:
        self.action_resume()
