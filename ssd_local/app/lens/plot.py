"""The lens's picture (matplotlib, written atomically): the tail mass at lock positions and
the head entropy at fork positions, base against tuned, and a per-token strip of the
longest text (tail mass per position, locks and forks marked)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..runs import atomic_write_bytes
from .scoring import Comparison
from .stats import FORK, LOCK, Stats

COLOURS = {"base": "#7f7f7f", "tuned": "#1f77b4"}


def _hist(ax: Any, cmp: Comparison, column: str, at: int, title: str, unit: str) -> None:
    labels = np.concatenate(cmp.labels) if cmp.labels else np.zeros(0, np.int8)
    values = {side: np.asarray(getattr(Stats.concat(m.stats), column))[labels == at]
              for side, m in (("base", cmp.base), ("tuned", cmp.tuned))}
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    if not len(values["base"]):
        ax.text(0.5, 0.5, "no such positions", ha="center", va="center",
                transform=ax.transAxes, color="#7f7f7f")
        return
    hi = max(float(v.max()) for v in values.values()) or 1.0
    bins = np.linspace(0.0, hi, 21)
    for side, v in values.items():
        ax.hist(v, bins=bins, alpha=0.5, color=COLOURS[side],
                label=f"{side}: mean {v.mean():.3g}")
        ax.axvline(float(v.mean()), color=COLOURS[side], linestyle="--", linewidth=1)
    ax.legend(fontsize=7)


def _strip(ax: Any, cmp: Comparison) -> None:
    i = int(np.argmax([len(s) for s in cmp.base.stats])) if cmp.base.stats else 0
    ax.set_title(f"tail mass per token, text {cmp.base.texts[i].text.id or i}"
                 if cmp.base.stats else "tail mass per token", fontsize=9)
    ax.set_xlabel("completion token", fontsize=8)
    if not cmp.base.stats or not len(cmp.base.stats[i]):
        return
    lab = cmp.labels[i]
    x = np.arange(len(lab))
    for pos in x[lab == LOCK]:
        ax.axvspan(pos - 0.5, pos + 0.5, color="#2ca02c", alpha=0.12, linewidth=0)
    for side, m in (("base", cmp.base), ("tuned", cmp.tuned)):
        ax.plot(x, m.stats[i].tail, color=COLOURS[side], linewidth=0.9, label=side)
    forks = x[lab == FORK]
    ax.plot(forks, np.zeros(len(forks)), "v", color="#d62728", markersize=3,
            label="fork")
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize=7, loc="upper right")


def plot(cmp: Comparison, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.8), dpi=110)
    _hist(axes[0], cmp, "tail", LOCK, "tail mass at lock positions (lower: cut)",
          "tail mass")
    _hist(axes[1], cmp, "entropy", FORK, "head entropy at fork positions (kept?)",
          "entropy of the truncated distribution (nats)")
    _strip(axes[2], cmp)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
