"""What every training backend shares, without importing any framework: the batch plan,
the step count, the learning-rate schedule and the checkpoint folder layout.

Batches are planned as lists of example indices:
- ``pack``: examples concatenated into rows of up to ``max_seq_len`` tokens (first-fit by
  decreasing length); the engine keeps attention inside each example with per-example
  position ids;
- ``group``: examples of similar length share a padded batch;
- ``none``: padded batches in sample order.

Both backends write ``RUN/checkpoints/step-NNNNNNN/`` with a ``state.json`` that holds the
step (and the backend that wrote it); a folder without ``state.json`` is an unfinished save.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..config import MIN_LR_RATIO, TrainConfig
from ..errors import UserError
from .base import StepReport

# Logits per output-layer chunk of the torch loss, positions x vocabulary entries: 32M, i.e.
# 128 MiB in fp32 (about 5x that while the chunk's loss is differentiated), whatever the
# vocabulary. A fixed count of positions would not do: 2,048 positions of a 152k vocabulary
# are 1.2 GiB of fp32 logits, 5.8 GiB in backward.
LOSS_CHUNK_LOGITS = 2**25


def loss_chunk(vocab: int) -> int:
    """Response positions per output-layer chunk for a vocabulary of ``vocab`` entries."""
    return max(64, LOSS_CHUNK_LOGITS // max(vocab, 1))


# glibc's malloc serves blocks below its mmap threshold from the heap and keeps them there
# once freed; each larger block it frees raises the threshold, up to 32 MiB. Training frees
# and reallocates MiB-sized activations every micro-batch, so with the moving threshold they
# pile up as resident memory nothing uses (SmolLM2-135M, 4 x 638 tokens, checkpointing on:
# 4.5 GiB peak RSS for 1.5 GiB in use). A fixed threshold maps every block above it on its
# own, and unmaps it when freed (tests/test_memory.py, bench/training.py). Fresh pages
# for every large block cost time (about 1.3x the step), so the memory plan asks for it
# only where the retained memory would not fit (``--compact-memory``).
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def release_freed_blocks() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` for this process (Linux with glibc;
    elsewhere nothing is done). Whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # another C library (musl)
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, the high-water mark of this
    process image (``ru_maxrss`` also counts the parent's memory when it was started by
    fork and exec, as a subprocess of a large process is); elsewhere ``ru_maxrss``."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024  # macOS: bytes; else KiB


__all__ = ["loss_chunk", "peak_rss_mb", "StepReport", "plan_epoch", "total_steps", "warmup_steps", "lr_at",
           "latest_checkpoint", "checkpoint_backend", "prune_checkpoints", "state_of",
           "write_checkpoint", "planned_steps"]


def total_steps(n_train: int, cfg: TrainConfig) -> tuple[int, int]:
    per_epoch = max(1, math.ceil(n_train / cfg.effective_batch))
    if cfg.max_steps:
        return cfg.max_steps, per_epoch
    return max(1, int(math.ceil(cfg.epochs * per_epoch))), per_epoch


def warmup_steps(total: int, cfg: TrainConfig) -> int:
    return max(1, int(round(cfg.warmup_ratio * total))) if cfg.warmup_ratio > 0 else 0


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from the peak to MIN_LR_RATIO x peak."""
    peak = cfg.peak_lr
    warm = warmup_steps(total, cfg)
    if step < warm:
        return peak * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * frac)))


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = sorted(p for p in ckpt_root.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def checkpoint_backend(ckpt: Path) -> str:
    """Which backend wrote a checkpoint (checkpoints from before the field are torch's)."""
    return json.loads((ckpt / "state.json").read_text()).get("backend", "torch")


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def state_of(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "state.json").read_text())


def write_checkpoint(ckpt_root: Path, step: int, keep: int, state: dict[str, Any],
                     write: Callable[[Path], None]) -> Path:
    """``write`` fills ``.step-N.tmp``; then ``state.json`` and a rename make it
    ``step-N`` at once. A failed save (disk full) leaves the previous checkpoint as it was."""
    final = ckpt_root / f"step-{step:07d}"
    tmp = ckpt_root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            prev = latest_checkpoint(ckpt_root)
            raise UserError("disk full while saving a checkpoint; "
                            + (f"{prev.name} is intact; " if prev else "")
                            + "free some space and rerun to resume") from None
        raise
    prune_checkpoints(ckpt_root, keep)
    return final


def planned_steps(lengths: list[int], cfg: TrainConfig, start: int, total: int,
                  per_epoch: int) -> Iterator[tuple[int, int, list]]:
    """``(step, epoch, micro-batches)`` for steps ``start..total-1``. Each epoch's plan is
    made once, when a step of it first comes, so a resume mid-epoch sees the same batches."""
    plan_of: tuple[int, Any] = (-1, None)  # (epoch, its plan)
    for step in range(start, total):
        epoch, k = divmod(step, per_epoch)
        if plan_of[0] != epoch:
            plan_of = (epoch, plan_epoch(lengths, cfg.batching, cfg.batch_size,
                                         cfg.effective_batch, cfg.max_seq_len, cfg.seed, epoch))
        yield step, epoch, plan_of[1][k % len(plan_of[1])]


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
