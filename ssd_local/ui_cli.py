"""Rich rendering of core events for the CLI: one progress bar per stage with rate and ETA,
logs and warnings above it."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from .app import events as ev


@lru_cache(maxsize=1)
def console() -> Console:
    return Console(stderr=False)


class EventRenderer:
    """Callable event sink: ``on_event=EventRenderer()``."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False,
            disable=quiet)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "EventRenderer":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}")

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.StageStarted):
            desc = e.stage + (f" ({e.detail})" if e.detail else "")
            if e.stage in self.tasks:
                self.progress.update(self.tasks[e.stage], total=e.total, completed=e.done,
                                     description=desc)
            else:
                self.tasks[e.stage] = self.progress.add_task(desc, total=e.total,
                                                             completed=e.done, rate="")
        elif isinstance(e, ev.Progress):
            if e.stage not in self.tasks:
                self.tasks[e.stage] = self.progress.add_task(e.stage, total=e.total, rate="")
            self.progress.update(self.tasks[e.stage], completed=e.done, total=e.total,
                                 rate=_rate(e.metrics))
        elif isinstance(e, ev.StageFinished):
            rep = e.summary.get("endpoint") if isinstance(e.summary, dict) else None
            if rep:
                why = ", ".join(f"{k} {v}" for k, v in rep["retry_reasons"].items())
                self.progress.console.print(
                    f"endpoint: {rep['requests']} requests, {rep['retries']} retried"
                    + (f" ({why})" if why else "") + f", {rep['failed']} failed")
            if e.stage in self.tasks and e.state == "done":
                t = self.progress.tasks[self.tasks[e.stage]]
                if t.total is not None:
                    self.progress.update(self.tasks[e.stage], completed=t.total)
        elif isinstance(e, ev.Warning):
            self.progress.console.print(f"[yellow]warning:[/] {e.message}")
        elif isinstance(e, ev.Log):
            self.progress.console.print(f"[dim]{e.message}")


def _rate(m: dict[str, float]) -> str:
    parts = []
    if "samples_per_s" in m:
        parts.append(f"{m['samples_per_s']:.2f} samples/s")
    if "loss" in m:
        parts.append(f"loss {m['loss']:.4f}")
    if "val_loss" in m:
        parts.append(f"val {m['val_loss']:.4f}")
    if "lr" in m:
        parts.append(f"lr {m['lr']:.2e}")
    if "tokens_per_s" in m:
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    if "in_flight" in m:
        parts.append(f"{m['in_flight']:.0f} in flight")
    if "passed" in m:
        parts.append(f"{m['passed']:.0f} passed")
    if "peak_mem_mb" in m:
        parts.append(f"{m['peak_mem_mb']:.0f} MB")
    return "  ".join(parts)
