"""The live dashboard of the current job: stage stepper, a progress bar per stage with its
rate and ETA, the loss curves, the newest samples and the log. It draws the ``JobView``
the app folds events into, for the job the app tells it to show (``show_job``); Cancel
stops that job at a safe point, Resume asks the app to start it again."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, ProgressBar, RichLog, Static

from ... import events as ev
from ..jobs import Job, StageView, format_metrics
from ..messages import OpenSamples, StartJob
from ..widgets import Chart, Series, sample_renderable, stage_text


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
        self.job: Job | None = None  # the job to show, set by the app
        self.bars: dict[str, StageBar] = {}
        self.shown: Job | None = None  # the job the bars were built for

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

    def show_job(self, job: Job | None) -> None:
        """Show ``job`` from now on (drawn in full when the screen is shown)."""
        self.job = job
        if self.is_current:
            self.redraw(full=True)

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
            self.post_message(StartJob(self.job))

    def action_samples(self) -> None:
        if self.job and self.job.run:
            self.post_message(OpenSamples(self.job.run))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#resume")
    def _resume(self) -> None:
        self.action_resume()
