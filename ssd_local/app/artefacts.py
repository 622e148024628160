"""Where a run's results lie, so no UI needs to know the folder layout: its GGUFs, its
merged model, its comparisons (``RUN/evals/compare-BENCH.json``) and evaluation summaries
(``RUN/evals/*/summary.json``, and ``$SSD_LOCAL_HOME/evals/*/summary.json`` for models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.paths import home
from .runs import runs_root


@dataclass(frozen=True)
class Found:
    label: str  # "RUN: BENCH" or "RUN/FOLDER" or "FOLDER"
    path: Path
    data: dict[str, Any]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def comparisons() -> list[Found]:
    """Every ``compare`` result of every run, oldest path first."""
    root = runs_root()
    out = []
    for p in sorted(root.glob("*/evals/compare-*.json")) if root.exists() else []:
        data = _read(p)
        if data is not None:
            out.append(Found(f"{p.parents[1].name}: {p.stem.removeprefix('compare-')}", p,
                             data))
    return out


def eval_summaries() -> list[Found]:
    """Every evaluation's ``summary.json``: runs' first, then plain models'."""
    root = runs_root()
    in_runs = sorted(root.glob("*/evals/*/summary.json")) if root.exists() else []
    out = []
    for p in in_runs + sorted((home() / "evals").glob("*/summary.json")):
        data = _read(p)
        if data is None:
            continue
        label = p.parent.name if p.parents[2] == home() else \
            f"{p.parents[2].name}/{p.parent.name}"
        out.append(Found(label, p, data))
    return out
