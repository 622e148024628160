"""Training examples from a run's samples: the paper's loss, on the exact sampled text.

An example is the chat-rendered prompt (``prompt_text``, exactly what sampling fed the
model) followed by the raw completion. Labels are -100 on every prompt token, so the
cross-entropy falls on response tokens only. A completion that ended on the end-of-turn
token gets that token appended (and learned), so the tuned model stops where its samples
stopped; one cut at the length limit is kept without it (the paper trains on raw outputs).

Batches are planned here, as lists of example indices, independent of any framework:
- ``pack``: examples concatenated into rows of up to ``max_seq_len`` tokens (first-fit by
  decreasing length); the engine keeps attention inside each example with per-example
  position ids;
- ``group``: examples of similar length share a padded batch;
- ``none``: padded batches in sample order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_response(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


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


def plan_epoch(lengths: Sequence[int], mode: str, batch_size: int, effective_batch: int,
               max_seq_len: int, seed: int, epoch: int) -> list[list[list[list[int]]]]:
    """One epoch as optimizer steps -> micro-batches -> rows -> example indices.

    Each step holds ``effective_batch`` examples (the last may hold fewer), drawn in a
    shuffled order fixed by (seed, epoch), so a step's data depends only on its number:
    resuming at step N replays exactly what an uninterrupted run would have seen. A forward
    pass never holds more than ``batch_size * max_seq_len`` tokens."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    steps = []
    for s in range(0, len(order), effective_batch):
        chunk = order[s:s + effective_batch]
        if mode == "pack":
            micro = [[row] for row in _pack(chunk, lengths, batch_size * max_seq_len)]
        else:
            if mode == "group":
                chunk = sorted(chunk, key=lambda i: lengths[i])
            micro = [[[i] for i in chunk[j:j + batch_size]]
                     for j in range(0, len(chunk), batch_size)]
        steps.append(micro)
    return steps


def _pack(chunk: list[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """First-fit decreasing: rows of at most ``budget`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(chunk, key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(budget - lengths[i])
    return rows
