"""Training examples from a run's samples: the paper's loss, on the exact sampled text.

An example is the chat-rendered prompt (``prompt_text``, exactly what sampling fed the
model) followed by the raw completion. Labels are -100 on every prompt token, so the
cross-entropy falls on response tokens only. A completion that ended on the end-of-turn
token gets that token appended (and learned), so the tuned model stops where its samples
stopped; one cut at the length limit is kept without it (the paper trains on raw outputs).

How examples are batched into optimizer steps is the trainers' shared plan
(``backends.train_common.plan_epoch``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..backends.base import IGNORE, Example

__all__ = ["IGNORE", "Example", "DataReport", "build_example", "build_examples", "is_val"]


@dataclass
class DataReport:
    samples: int = 0
    used: int = 0
    dropped_degenerate: int = 0
    dropped_looped: int = 0
    truncated: int = 0
    without_end_token: int = 0
    train: int = 0
    val: int = 0


def build_example(prompt_ids: list[int], completion_ids: list[int], end_id: int | None,
                  finished: bool, max_seq_len: int) -> tuple[Example, bool]:
    """Returns the example and whether it was cut at ``max_seq_len``."""
    response = list(completion_ids) + ([end_id] if finished and end_id is not None else [])
    ids = list(prompt_ids) + response
    labels = [IGNORE] * len(prompt_ids) + response
    cut = len(ids) > max_seq_len
    return Example(ids[:max_seq_len], labels[:max_seq_len]), cut


def is_val(prompt_id: str, fraction: float, seed: int) -> bool:
    """Hold out whole prompts (all their samples), chosen by a stable hash."""
    h = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(h[:4], "little") / 2**32 < fraction


def build_examples(samples: Sequence[dict[str, Any]], encode: Callable[[str], list[int]],
                   end_id: int | None, max_seq_len: int, val_fraction: float, seed: int,
                   drop_looped: bool = False) -> tuple[list[Example], list[Example], DataReport]:
    rep = DataReport(samples=len(samples))
    train: list[Example] = []
    val: list[Example] = []
    prompt_cache: dict[str, list[int]] = {}
    for s in samples:
        if s.get("degenerate"):
            rep.dropped_degenerate += 1
            continue
        if drop_looped and s.get("looped"):
            rep.dropped_looped += 1
            continue
        text = s["prompt_text"]
        if text not in prompt_cache:
            prompt_cache[text] = encode(text)
        finished = s.get("finish_reason") == "stop"
        ex, cut = build_example(prompt_cache[text], encode(s["completion"]), end_id, finished,
                                max_seq_len)
        if ex.n_response == 0:
            rep.truncated += 1  # the prompt alone fills max_seq_len: nothing to learn
            continue
        rep.truncated += cut
        rep.without_end_token += not finished
        rep.used += 1
        (val if is_val(s["prompt_id"], val_fraction, seed) else train).append(ex)
    if not train and val:  # tiny runs: never hold out everything
        train, val = val, []
    rep.train, rep.val = len(train), len(val)
    return train, val, rep
