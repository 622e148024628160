"""Long work the TUI starts (a distillation, a comparison) and what its events said.

A ``Job`` binds a core call to its arguments, so Resume calls the very same function again:
the core skips finished stages and continues the first unfinished one. A job learns the run
it writes from the core's ``RunOpened`` event. ``JobView`` folds the event stream into what
the dashboard shows; it derives nothing the core did not say."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import events as ev
from ..app.pipeline import ORDER

Call = Callable[[ev.OnEvent, threading.Event], Any]


@dataclass
class StageView:
    name: str
    state: str = "pending"  # pending | running | done | cancelled | failed
    done: int = 0
    total: int | None = None
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class JobView:
    """Everything the events of one job reported, in a shape widgets read directly."""

    stages: dict[str, StageView] = field(default_factory=dict)
    train_loss: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)
    val_loss: list[tuple[float, float]] = field(default_factory=list)
    samples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=3))
    logs: list[str] = field(default_factory=list)

    def stage(self, name: str) -> StageView:
        return self.stages.setdefault(name, StageView(name))

    def apply(self, e: ev.Event) -> None:
        if isinstance(e, ev.StageStarted):
            s = self.stage(e.stage)
            s.state, s.done, s.total, s.detail = "running", e.done, e.total, e.detail
            if e.stage == "train":  # a resumed training redoes the steps after its checkpoint
                self.train_loss = [p for p in self.train_loss if p[0] <= e.done]
                self.val_loss = [p for p in self.val_loss if p[0] <= e.done]
        elif isinstance(e, ev.Progress):
            s = self.stage(e.stage)
            s.state, s.done, s.total, s.metrics = "running", e.done, e.total, e.metrics
            if "loss" in e.metrics:
                self.train_loss.append((e.done, e.metrics["loss"]))
            if "val_loss" in e.metrics:
                self.val_loss.append((e.done, e.metrics["val_loss"]))
        elif isinstance(e, ev.SampleWritten):
            self.samples.append(e.sample)
        elif isinstance(e, ev.StageFinished):
            s = self.stage(e.stage)
            s.state = e.state
            if e.state == "done" and s.total is not None:
                s.done = s.total
        elif isinstance(e, ev.Warning):
            self.logs.append(f"[yellow]warning:[/] {e.message}")
        elif isinstance(e, ev.Log):
            self.logs.append(e.message)


@dataclass
class Job:
    title: str  # e.g. "distill smollm2-135m -> run r1"
    kind: str  # "distill" | "compare"
    call: Call
    run: str | None = None  # the run it writes, when known
    state: str = "idle"  # idle | running | cancelling | done | cancelled | failed
    cancel: threading.Event = field(default_factory=threading.Event)
    view: JobView = field(default_factory=JobView)
    result: Any = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.kind == "distill":
            for name in ORDER:
                self.view.stage(name)

    @property
    def active(self) -> bool:
        return self.state in ("running", "cancelling")

    def execute(self, on_event: ev.OnEvent) -> Any:
        """Run the core call on this (worker) thread; the run it opens names the job's run
        from then on, so starting the job again reopens that run."""

        def seen(e: ev.Event) -> None:
            if isinstance(e, ev.RunOpened):
                self.run = e.run
            on_event(e)

        return self.call(seen, self.cancel)

    def begin(self) -> None:
        """(Re)start: a fresh cancel event, so a cancelled job can be resumed."""
        self.cancel = threading.Event()
        self.state, self.error, self.result = "running", "", None

    def request_cancel(self) -> None:
        if self.active:
            self.cancel.set()
            self.state = "cancelling"

    def ended(self, state: str, result: Any, error: str) -> None:
        self.state, self.result, self.error = state, result, error
        for s in self.view.stages.values():
            if s.state == "running":  # a stage that stopped without a finish event
                s.state = state


def collapse(events: list[ev.Event]) -> list[ev.Event]:
    """Drop a Progress event when a later one of the same stage follows in the batch: a
    flood of progress costs one redraw. Progress that carries a loss is kept (the curve
    needs every point)."""
    last: dict[str, int] = {}
    for i, e in enumerate(events):
        if isinstance(e, ev.Progress):
            last[e.stage] = i
    return [e for i, e in enumerate(events)
            if not (isinstance(e, ev.Progress) and last[e.stage] != i
                    and "loss" not in e.metrics and "val_loss" not in e.metrics)]


class EventSink:
    """The ``on_event`` a worker passes to the core. Called on the worker's thread, it
    queues the event and, unless a notice is already on its way, posts one; the UI thread
    then drains everything queued at once."""

    def __init__(self, notify: Callable[[], None]):
        self._notify = notify
        self._lock = threading.Lock()
        self._events: list[ev.Event] = []
        self._posted = False

    def __call__(self, e: ev.Event) -> None:
        with self._lock:
            self._events.append(e)
            post, self._posted = not self._posted, True
        if post:
            self._notify()

    def drain(self) -> list[ev.Event]:
        with self._lock:
            out, self._events, self._posted = self._events, [], False
        return collapse(out)


def format_metrics(m: dict[str, float]) -> str:
    """The rate column: what the core measured, in words."""
    parts = []
    for key, fmt in (("samples_per_s", "{:.2f} samples/s"), ("loss", "loss {:.4f}"),
                     ("val_loss", "val {:.4f}"), ("lr", "lr {:.2e}"),
                     ("tokens_per_s", "{:.0f} tok/s"), ("passed", "{:.0f} passed"),
                     ("peak_mem_mb", "{:.0f} MB")):
        if key in m:
            parts.append(fmt.format(m[key]))
    return "  ".join(parts)


def distill_job(model: str, sample_cfg: Any, train_cfg: Any, export_cfg: Any,
                run: str | None, stop_after: str | None = None) -> Job:
    """A distillation. Without a run name the core picks one; the job learns it from
    ``RunOpened``, so Resume continues that run."""
    from ..app.pipeline import distill

    job = Job(f"distill {model}", "distill", lambda on_event, cancel: None, run)
    job.call = lambda on_event, cancel: distill(
        model, sample_cfg, train_cfg, export_cfg, job.run, stop_after=stop_after,
        on_event=on_event, cancel=cancel)
    return job


def resume_job(run_name: str) -> Job:
    """Continue a run with the settings it was started with: the core's ``resume``.
    Raises ``UserError`` for a run that records no plan to continue."""
    from ..app.pipeline import planned, resume

    model = planned(run_name).model
    return Job(f"distill {model}", "distill",
               lambda on_event, cancel: resume(run_name, on_event=on_event, cancel=cancel),
               run_name)


def compare_job(run: str, cfg: Any) -> Job:
    """``compare`` for ``run`` with a ``CompareConfig`` (its sweep included)."""
    from ..app.evaluation.compare import compare

    return Job(f"compare {run} on {cfg.benchmark}", "compare",
               lambda on_event, cancel: compare(run, cfg, on_event=on_event, cancel=cancel),
               run)


def lens_job(run: str, cfg: Any) -> Job:
    """``lens`` for ``run`` with a ``LensConfig``: base vs tuned per token."""
    from ..app.lens.report import run_lens

    return Job(f"lens {run} on {cfg.source}", "lens",
               lambda on_event, cancel: run_lens(run, cfg, on_event=on_event, cancel=cancel),
               run)
