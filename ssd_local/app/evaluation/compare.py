"""``ssd-local compare RUN``: the check that keeps SSD honest.

The base model and the distilled model answer the same problems at every temperature of a
sweep, each with its own top-k/top-p. SSD's claim holds only if the tuned model's best
setting beats the base model's *best* setting, not just its default; the difference comes
with a paired bootstrap interval over problems.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ...config import CompareConfig
from ...errors import UserError
from ...events import Log, OnEvent, ignore
from .. import engines
from ..runs import Run, atomic_write_bytes, atomic_write_json
from . import scoring
from .evaluate import evaluate, guard_contamination, is_run, load_problems, resolve_target


@dataclass
class Point:
    temperature: float
    summary: dict[str, Any]
    per_problem: dict[str, float]  # pass@1 per problem


@dataclass(frozen=True)
class CompareResult:
    """What ``compare`` found; ``record()`` is the JSON written next to the plot."""

    run: str
    benchmark: str
    problems: int
    samples_per_problem: int
    rows: list[dict[str, Any]]
    base_best: dict[str, Any]
    tuned_best: dict[str, Any]
    difference: dict[str, Any]
    verdict: str
    plot: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def compare(run_name: str, cfg: CompareConfig, *, on_event: OnEvent = ignore,
            cancel: threading.Event | None = None) -> CompareResult:
    if not is_run(run_name):
        raise UserError(f"no run named '{run_name}'; see `ssd-local runs`")
    cfg.validate()
    run = Run.load(run_name)
    problems = load_problems(cfg, on_event)
    overlaps = guard_contamination(run, problems, cfg.allow_overlap, on_event)
    sides: dict[str, list[Point]] = {}
    for side, base in (("base", True), ("tuned", False)):
        target = resolve_target(run_name, cfg, on_event, base=base)
        on_event(Log(f"{side}: {target.label}, top-k {target.decoding.top_k or 'off'}, "
                     f"top-p {target.decoding.top_p:g}"))
        engine = engines.open_for(target.model, cfg, chat=cfg.chat or target.model is None,
                                  on_event=on_event)
        try:
            points = []
            for t in cfg.sweep():
                c = replace(cfg, temperature=t, top_k=None, top_p=None)
                r = evaluate(run_name, c, on_event=on_event, cancel=cancel, base=base,
                             engine=engine, problems=problems, overlaps=overlaps)
                pp = scoring.per_problem_pass(scoring.counts(r.graded), 1)
                points.append(Point(t, r.summary, pp))
        finally:
            engine.close()
        sides[side] = points
    v = verdict(sides, cfg.ks(), cfg.seed)
    out = run.path / "evals"
    bench = (cfg.benchmark or "").split(":")[0]
    png = plot(sides, out / f"compare-{bench}.png",
               f"{run.name} on {bench} ({len(problems)} problems)")
    result = CompareResult(run.name, cfg.benchmark, len(problems), cfg.samples(), v["rows"],
                           v["base_best"], v["tuned_best"], v["difference"], v["verdict"],
                           str(png))
    atomic_write_json(out / f"compare-{bench}.json", result.record())
    return result


def best(points: list[Point]) -> Point:
    """Highest pass@1; ties go to the lower temperature."""
    return max(points, key=lambda p: (p.summary.get("pass@1", 0.0), -p.temperature))


def verdict(sides: dict[str, list[Point]], ks: list[int], seed: int = scoring.SEED) -> dict[str, Any]:
    rows = []
    for b, t in zip(sides["base"], sides["tuned"]):
        row: dict[str, Any] = {"temperature": b.temperature}
        for k in ks:
            row[f"base pass@{k}"] = b.summary.get(f"pass@{k}")
            row[f"tuned pass@{k}"] = t.summary.get(f"pass@{k}")
        rows.append(row)
    bb, tb = best(sides["base"]), best(sides["tuned"])
    diff = scoring.paired_difference(bb.per_problem, tb.per_problem, seed)
    points = 100 * diff.value
    if diff.low > 0:
        sentence = (f"SSD beat the base model's best setting (T={bb.temperature:g}, pass@1 "
                    f"{100 * bb.summary['pass@1']:.1f}%) by {points:+.1f} points pass@1 at "
                    f"T={tb.temperature:g} (95% interval {100 * diff.low:+.1f} to "
                    f"{100 * diff.high:+.1f}).")
    elif diff.high < 0:
        sentence = (f"SSD fell short of the base model's best setting (T={bb.temperature:g}) "
                    f"by {-points:.1f} points pass@1 (95% interval {100 * diff.low:+.1f} to "
                    f"{100 * diff.high:+.1f}).")
    else:
        sentence = (f"SSD did not clearly beat the base model's best setting "
                    f"(T={bb.temperature:g}): {points:+.1f} points pass@1 at "
                    f"T={tb.temperature:g}, 95% interval {100 * diff.low:+.1f} to "
                    f"{100 * diff.high:+.1f}, which includes zero.")
    return {"rows": rows,
            "base_best": {"temperature": bb.temperature, "pass@1": bb.summary.get("pass@1")},
            "tuned_best": {"temperature": tb.temperature, "pass@1": tb.summary.get("pass@1")},
            "difference": {"pass@1": diff.value, "ci95": [diff.low, diff.high]},
            "verdict": sentence}


def plot(sides: dict[str, list[Point]], path: Path, title: str) -> Path:
    """pass@1 against temperature, base vs tuned, with each best marked. Written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for side, colour in (("base", "#7f7f7f"), ("tuned", "#1f77b4")):
        pts = sides[side]
        xs = [p.temperature for p in pts]
        ys = [100 * p.summary.get("pass@1", 0.0) for p in pts]
        lo = [100 * p.summary.get("ci95", {}).get("pass@1", [0, 0])[0] for p in pts]
        hi = [100 * p.summary.get("ci95", {}).get("pass@1", [0, 0])[1] for p in pts]
        ax.plot(xs, ys, marker="o", color=colour, label=side)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15)
        b = best(pts)
        ax.plot([b.temperature], [100 * b.summary.get("pass@1", 0.0)], marker="*",
                markersize=14, color=colour)
    ax.set_xlabel("temperature")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
