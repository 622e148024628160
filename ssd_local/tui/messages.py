"""Messages of the TUI. Workers never touch widgets: they post these, and the UI thread
renders. Screens never call the app: they post a request (``StartJob``, ``OpenSamples``,
``StartServer`` ...), which bubbles up to the app; the app tells screens what to show
(``ServerChanged``, posted to the serve panel, which does not bubble back)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from ..app.serving import ServerHandle
    from ..config import ServeConfig
    from .jobs import Job


# -- from workers ----------------------------------------------------------------------------
class EventsPending(Message):
    """Core events wait in the sink. One pending notice stands for any number of events,
    so a newer notice supersedes an older one still in the queue."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsPending)


class JobEnded(Message):
    """A job's core call returned (``done``), stopped at a safe point (``cancelled``) or
    raised (``failed``)."""

    def __init__(self, job: "Job", state: str, result: Any = None, error: str = ""):
        super().__init__()
        self.job, self.state, self.result, self.error = job, state, result, error


# -- requests from screens to the app ---------------------------------------------------------
class StartJob(Message):
    """Start ``job``, or start it again (Resume on the dashboard: the same core call)."""

    def __init__(self, job: "Job"):
        super().__init__()
        self.job = job


class ResumeRun(Message):
    """Continue the run named ``run`` with the settings it was started with."""

    def __init__(self, run: str):
        super().__init__()
        self.run = run


class OpenSamples(Message):
    """Browse the samples of the run named ``run``."""

    def __init__(self, run: str):
        super().__init__()
        self.run = run


class NewRun(Message):
    """Open the distillation form, for ``model`` when one was picked."""

    def __init__(self, model: str | None = None):
        super().__init__()
        self.model = model


class StartServer(Message):
    """Serve ``target`` (a run with GGUFs, or a GGUF model) with ``cfg``."""

    def __init__(self, target: str, cfg: "ServeConfig"):
        super().__init__()
        self.target, self.cfg = target, cfg


class StopServer(Message):
    """Stop the endpoint."""


# -- from the app to screens -------------------------------------------------------------------
class ServerChanged(Message, bubble=False):
    """The endpoint is ``handle`` (loading, or serving once ``handle.running``), or none:
    stopped, or it failed to start (``error``)."""

    def __init__(self, handle: "ServerHandle | None", error: str = ""):
        super().__init__()
        self.handle, self.error = handle, error
