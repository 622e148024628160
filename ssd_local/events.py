"""Events the core reports through one ``on_event`` callable. UIs render them; the core
never prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class RunOpened:
    """A run directory was created or reopened for writing (its name is fixed from here)."""

    run: str


@dataclass(frozen=True)
class StageStarted:
    stage: str
    total: int | None = None  # units of work (samples, steps), when known
    done: int = 0  # already finished before this start (resume)
    detail: str = ""


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int
    total: int | None
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. tokens_per_s


@dataclass(frozen=True)
class SampleWritten:
    stage: str
    sample: dict[str, Any]


@dataclass(frozen=True)
class StageFinished:
    stage: str
    state: str  # done | cancelled | failed
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Log:
    message: str
    stage: str = ""


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the event's name in the SSD vocabulary
    message: str
    stage: str = ""


Event = RunOpened | StageStarted | Progress | SampleWritten | StageFinished | Log | Warning
OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: drop events."""
