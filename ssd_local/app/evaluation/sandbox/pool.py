"""Host side: many jobs in parallel, one sandbox each, yielded as they finish."""

from __future__ import annotations

import os
import queue
import threading
from typing import Iterator, Sequence

from .host import Job, Limits, Outcome, check, run_job


class _Stop:
    """Set by the caller's ``cancel`` or by us (the caller stopped iterating); setting only
    our own event leaves the caller's untouched."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.own = threading.Event()
        self.cancel = cancel

    def is_set(self) -> bool:
        return self.own.is_set() or (self.cancel is not None and self.cancel.is_set())


def _workers(workers: int | None) -> int:
    if workers:
        return max(1, workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _worker(jobs: Sequence[Job], limits: Limits, stop: _Stop,
            todo: queue.SimpleQueue[int],
            done: queue.SimpleQueue[tuple[int, Outcome | None] | BaseException | None]
            ) -> None:
    """Take jobs until none is left or ``stop``; always ends with a None on ``done``."""
    try:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            done.put((i, run_job(jobs[i], limits, stop)))
    except BaseException as exc:  # surfaced in the caller's thread
        done.put(exc)
    finally:
        done.put(None)


def run_many(jobs: Sequence[Job], limits: Limits = Limits(), workers: int | None = None,
             cancel: threading.Event | None = None) -> Iterator[tuple[int, Outcome]]:
    """Run jobs in parallel (default: one per CPU), yielding ``(index, outcome)`` as each
    finishes. Threads only wait on their runner, so they cost nothing. Once ``cancel`` is
    set, or the caller stops iterating, nothing new starts and running jobs are killed
    (and not yielded)."""
    for job in jobs:
        check(job)
    stop = _Stop(cancel)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(jobs)):
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Outcome | None] | BaseException | None] = \
        queue.SimpleQueue()
    n = min(_workers(workers), len(jobs))
    threads = [threading.Thread(target=_worker, args=(jobs, limits, stop, todo, done),
                                name=f"sandbox-{k}", daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    live = n
    try:
        while live:
            item = done.get()
            if item is None:
                live -= 1
            elif isinstance(item, BaseException):
                stop.own.set()
                raise item
            elif item[1] is not None:
                yield item[0], item[1]
    finally:
        if live:
            stop.own.set()
        for t in threads:
            t.join()
