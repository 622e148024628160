"""What every training backend shares, without importing any framework: the step count,
the learning-rate schedule, the per-step report and the checkpoint folder layout.

Both backends write ``RUN/checkpoints/step-NNNNNNN/`` with a ``state.json`` that holds the
step (and the backend that wrote it); a folder without ``state.json`` is an unfinished save.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..app.config import MIN_LR_RATIO, TrainConfig


@dataclass
class StepReport:
    step: int
    total: int
    loss: float
    lr: float
    tokens_per_s: float
    peak_mem_mb: float
    val_loss: float | None = None
    # mlx only: response (trained) tokens per second of training compute, the figure
    # mlx-lm itself reports; None on torch
    trained_tokens_per_s: float | None = None


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
    from ..app.errors import UserError

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
    from ..app.trainset import plan_epoch

    plan_of: tuple[int, Any] = (-1, None)  # (epoch, its plan)
    for step in range(start, total):
        epoch, k = divmod(step, per_epoch)
        if plan_of[0] != epoch:
            plan_of = (epoch, plan_epoch(lengths, cfg.batching, cfg.batch_size,
                                         cfg.effective_batch, cfg.max_seq_len, cfg.seed, epoch))
        yield step, epoch, plan_of[1][k % len(plan_of[1])]
