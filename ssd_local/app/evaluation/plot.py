"""``compare``'s picture: pass@1 against temperature for the base model (its own top-k/top-p,
with a 95% band), the best base top-k/top-p per temperature with ``--base-grid``, the tuned
model (with its band), the base at the distillation settings as one marked point, and each
model's best as a star. Written atomically as a PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from ..runs import atomic_write_bytes
from .verdict import GRID, SWEEP

BASE, TUNED, SKEPTIC = "#7f7f7f", "#1f77b4", "#d62728"


def _line(rows: Sequence[dict[str, Any]]) -> tuple[list[float], list[float], list[float],
                                                   list[float]]:
    rows = sorted(rows, key=lambda r: r["temperature"])
    xs = [r["temperature"] for r in rows]
    ys = [100 * (r.get("pass@1") or 0.0) for r in rows]
    lo = [100 * r["ci95"].get("pass@1", [0, 0])[0] for r in rows]
    hi = [100 * r["ci95"].get("pass@1", [0, 0])[1] for r in rows]
    return xs, ys, lo, hi


def grid_best(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base's best row per temperature over every top-k/top-p it was decoded with."""
    by_t: dict[float, dict[str, Any]] = {}
    for r in rows:
        if r["model"] == "base" and r["role"] in (SWEEP, GRID):
            b = by_t.get(r["temperature"])
            if b is None or (r.get("pass@1") or 0) > (b.get("pass@1") or 0):
                by_t[r["temperature"]] = r
    return [by_t[t] for t in sorted(by_t)]


def plot(v: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = v["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, colour, sel in (
            ("base (own top-k/top-p)", BASE, [r for r in rows if r["model"] == "base"
                                              and r["role"] == SWEEP]),
            ("tuned", TUNED, [r for r in rows if r["model"] == "tuned"])):
        xs, ys, lo, hi = _line(sel)
        ax.plot(xs, ys, marker="o", color=colour, label=label)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15)
    if any(r["role"] == GRID for r in rows):
        xs, ys, _, _ = _line(grid_best(rows))
        ax.plot(xs, ys, linestyle="--", marker=".", color=BASE,
                label="base, best top-k/top-p per T")
    s = v.get("distillation_settings") or {}
    if s:
        ax.plot([s["temperature"]], [100 * (s.get("pass@1") or 0)], marker="X", markersize=9,
                linestyle="none", color=SKEPTIC, label="base at the distillation settings")
    for key, colour in (("base_best", BASE), ("tuned_best", TUNED)):
        b = v[key]
        ax.plot([b["temperature"]], [100 * (b.get("pass@1") or 0)], marker="*",
                markersize=14, color=colour)
    ax.set_xlabel("temperature")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
