"""The Textual app: screens, global bindings, the command palette, and the one place
where workers meet the UI thread.

Screens post requests (``StartJob``, ``ResumeRun``, ``OpenSamples``, ``NewRun``,
``StartServer``, ``StopServer``); the app handles them and tells each screen what to show
(the dashboard its job, the serve panel the current ``ServerHandle``, Home the hardware).

Long work runs in thread workers: a job (a distillation, a comparison) calls the core with
an ``EventSink`` as ``on_event`` and its own ``threading.Event`` as ``cancel``; the sink
hands events to the UI thread in batches. The core's ``ServerHandle`` loads and starts the
endpoint in a thread worker; stopping it returns once its port is free."""

from __future__ import annotations

import traceback
from typing import Iterable

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static

from ..app.inventory import Hardware
from ..app.serving import ServerHandle
from ..errors import Cancelled, UserError
from ..events import Log
from .jobs import EventSink, Job, resume_job
from .messages import (EventsPending, JobEnded, NewRun, OpenSamples, ResumeRun, ServerChanged,
                       StartJob, StartServer, StopServer)
from .screens.dashboard import DashboardScreen
from .screens.distill import DistillScreen
from .screens.evals import EvalsScreen
from .screens.home import HomeScreen
from .screens.lens import LensScreen
from .screens.samples import SamplesScreen
from .screens.serve import ServeScreen


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
        Binding("l", "lens", "Lens", show=False),
        Binding("v", "serve", "Serve"),
        Binding("h", "home", "Home"),
    ]

    def __init__(self, hardware: Hardware | None = None):
        super().__init__()
        self.hardware = hardware
        self.job: Job | None = None
        self.endpoint: ServerHandle | None = None  # loading or serving; None when stopped
        self.sink = EventSink(lambda: self.post_message(EventsPending()))
        self.quitting = False
        self.dashboard: DashboardScreen
        self.home: HomeScreen

    def on_mount(self) -> None:
        self.dashboard, self.home = DashboardScreen(), HomeScreen(self.hardware)
        self.install_screen(self.dashboard, "dashboard")
        self.push_screen(self.home)
        if self.hardware is None:
            self.detect_hardware()

    @work(thread=True, exclusive=True, group="hardware", exit_on_error=False)
    def detect_hardware(self) -> None:
        from ..app.inventory import detect_hardware

        self.call_from_thread(self.show_hardware, detect_hardware())

    def show_hardware(self, hw: Hardware) -> None:
        self.hardware = hw
        self.home.show_hardware(hw)

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
        self.goto(DistillScreen(model, self.hardware))

    def action_dashboard(self) -> None:
        self.goto("dashboard")

    def action_evals(self) -> None:
        self.goto(EvalsScreen())

    def action_lens(self) -> None:
        self.goto(LensScreen())

    def action_serve(self) -> None:
        self.goto(ServeScreen(self.endpoint))

    def open_samples(self, run: str) -> None:
        try:
            self.goto(SamplesScreen(run))
        except UserError as exc:
            self.notify(str(exc), severity="error")

    def on_new_run(self, message: NewRun) -> None:
        self.action_new_run(message.model)

    def on_open_samples(self, message: OpenSamples) -> None:
        self.open_samples(message.run)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New distillation", "Sample, train, fuse and export a model",
                            self.action_new_run)
        yield SystemCommand("Dashboard", "Progress of the current run", self.action_dashboard)
        yield SystemCommand("Evaluations", "Base vs tuned pass@1, eval summaries",
                            self.action_evals)
        yield SystemCommand("Lens", "Base vs tuned per token: tail mass at locks, entropy "
                            "at forks", self.action_lens)
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
        self.dashboard.show_job(job)
        self.goto("dashboard")
        self.run_job(job)

    def on_start_job(self, message: StartJob) -> None:
        self.start_job(message.job)

    def on_resume_run(self, message: ResumeRun) -> None:
        """Resume from Home: the core's ``pipeline.resume`` with the run's own settings."""
        try:
            job = resume_job(message.run)
        except UserError as exc:
            self.notify(f"cannot resume run {message.run}: {exc}", severity="error")
            return
        self.start_job(job)

    @work(thread=True, group="job", exit_on_error=False)
    def run_job(self, job: Job) -> None:
        try:
            result = job.execute(self.sink)
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
        if self.screen is self.dashboard:
            self.dashboard.redraw(events)

    def on_job_ended(self, message: JobEnded) -> None:
        self.drain_events()
        message.job.ended(message.state, message.result, message.error)
        if self.screen is self.dashboard:
            self.dashboard.job_ended(message.job)
        else:
            self.notify(f"{message.job.title}: {message.state}",
                        severity="error" if message.state == "failed" else "information")
            if self.screen is self.home:
                self.home.refresh_data()
        if self.quitting:
            self.finish_quit()

    # -- the endpoint --------------------------------------------------------------------------
    def on_start_server(self, message: StartServer) -> None:
        self.stop_server()
        try:
            handle = ServerHandle(message.target, message.cfg)
        except UserError as exc:
            self.server_changed(None, str(exc))
            return
        self.endpoint = handle
        self.server_changed(handle)
        self.start_server(handle)

    @work(thread=True, group="endpoint", exit_on_error=False)
    def start_server(self, handle: ServerHandle) -> None:
        """Load the model and listen (``ServerHandle.start`` returns once it answers)."""
        try:
            handle.start()
            error = ""
        except (UserError, RuntimeError, OSError) as exc:
            error = str(exc)
        except Exception as exc:  # a model llama.cpp cannot load: said in the panel
            error = f"{type(exc).__name__}: {exc}"
        self.call_from_thread(self.server_started, handle, error)

    def server_started(self, handle: ServerHandle, error: str) -> None:
        if handle is not self.endpoint:  # stopped or replaced while it loaded
            handle.stop()
            return
        if error:
            handle.stop()
            self.endpoint = None
        self.server_changed(self.endpoint, error)

    def on_stop_server(self, _: StopServer) -> None:
        self.stop_server()

    def stop_server(self) -> None:
        """Stop the endpoint; returns once it no longer listens."""
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
            self.server_changed(None)

    def server_changed(self, handle: ServerHandle | None, error: str = "") -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ServeScreen):
                screen.post_message(ServerChanged(handle, error))

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
