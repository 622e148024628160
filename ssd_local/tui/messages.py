"""Messages between worker threads and the UI thread. Workers never touch widgets: they
post these, and the UI thread renders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from .jobs import Job


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


class ServerChanged(Message):
    """The endpoint started (``url`` set), stopped, or failed to start (``error``)."""

    def __init__(self, url: str | None, error: str = ""):
        super().__init__()
        self.url, self.error = url, error
