"""The one generation loop: ``sample`` (training data) and ``eval`` (benchmark answers) both
hand it their work items and a writer, and it does the rest the same way for both:

- each distinct chat is rendered once, with the engine's own template;
- every item gets its own seed (``derive_seed``), so a result does not depend on which
  others shared its batch and a rerun continues where it stopped;
- results are handed to ``write`` as they finish (any order), progress goes out as events
  with the rates and, for a served engine, requests in flight and retries;
- once ``cancel`` is set, nothing new starts and :class:`Cancelled` is raised after the
  finished results are written.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..backends.base import (GenerationRequest, GenerationResult, Messages, SamplingEngine,
                             SamplingParams)
from ..errors import Cancelled
from ..events import OnEvent, Progress


def derive_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    h = hashlib.sha256(f"{seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Item:
    """One answer to generate: ``key`` is (prompt or task id, sample index)."""

    key: tuple[str, int]
    messages: Messages


@dataclass(frozen=True)
class Done:
    """What the loop did: new results and their generated tokens."""

    results: int
    tokens: int


Write = Callable[[GenerationResult, str], None]  # (result, the prompt text it answered)


def generate(engine: SamplingEngine, items: Sequence[Item], params: SamplingParams, *,
             seed: int, in_flight: int, stage: str, total: int, write: Write,
             on_event: OnEvent, cancel: threading.Event | None = None) -> Done:
    """Generate every item with ``engine``; ``total`` counts finished work too (resume)."""
    rendered: dict[str, str] = {}
    requests = []
    for item in items:
        text = rendered.get(item.key[0])
        if text is None:
            text = rendered[item.key[0]] = engine.render(item.messages)
        requests.append(GenerationRequest(item.key, text, derive_seed(seed, *item.key)))
    by_key = {r.key: r.prompt_text for r in requests}
    done0 = total - len(items)
    start, n, tokens = time.monotonic(), 0, 0
    for res in engine.generate(requests, params, batch_size=in_flight, cancel=cancel):
        write(res, by_key[res.key])
        n += 1
        tokens += res.completion_tokens
        dt = max(time.monotonic() - start, 1e-9)
        metrics = {"samples_per_s": n / dt, "tokens_per_s": tokens / dt}
        stats = engine.stats()
        if stats is not None:
            metrics.update(in_flight=stats.in_flight, retries=stats.retries)
        on_event(Progress(stage, done0 + n, total, metrics))
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{stage} stopped after {done0 + n} of {total}")
    return Done(n, tokens)
