"""``compare``'s numbers and its one-sentence answer, from the evaluations it made.

Each model's best is its highest pass@1 (ties: the lower temperature, then the model's own
top-k/top-p before a grid point); pass@k for the other k is reported at those same
settings. Differences are tuned minus base over the problems both answered, with a paired
bootstrap interval, for every k. Choosing the base's best among more settings
(``--base-grid``) can only favour the base, so a win there is the stronger claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ...config import Decoding
from . import scoring

SWEEP, GRID, DISTILLATION = "sweep", "grid", "distillation settings"  # a point's role
_RANK = {SWEEP: 0, DISTILLATION: 1, GRID: 2}  # ties go to the model's own settings


@dataclass(frozen=True)
class Point:
    """One evaluation: a model at one decoding, with (samples, passed) per problem."""

    model: str  # base | tuned
    decoding: Decoding
    counts: dict[str, tuple[int, int]]
    role: str = SWEEP
    no_code: int = 0  # answers without extractable code
    folder: str = ""  # the evaluation's folder (in RUN/evals)

    @property
    def temperature(self) -> float:
        return self.decoding.temperature

    def per_problem(self, k: int) -> dict[str, float]:
        return scoring.per_problem_pass(self.counts, k)

    def samples(self) -> int:
        """Samples per problem (the fewest any problem has)."""
        return min((n for n, _ in self.counts.values()), default=0)

    def same(self, d: Decoding) -> bool:
        """Decoded as ``d`` (at T=0 top-k/top-p do not matter: greedy)."""
        if self.temperature == 0 and d.temperature == 0:
            return True
        return self.decoding == d


def row(p: Point, ks: Sequence[int], seed: int, distillation: Decoding | None) -> dict[str, Any]:
    r: dict[str, Any] = {"model": p.model, "role": p.role, **p.decoding.as_dict(),
                         "distillation": p.model == "base" and distillation is not None
                         and p.same(distillation)}
    ci: dict[str, list[float]] = {}
    for k in ks:
        key = f"pass@{k}"
        if k > p.samples():
            r[key] = None
            continue
        e = scoring.bootstrap(list(p.per_problem(k).values()), seed)
        r[key], ci[key] = e.value, [e.low, e.high]
    r.update(ci95=ci, no_code=p.no_code, samples=sum(n for n, _ in p.counts.values()),
             folder=p.folder)
    return r


def best(points: Sequence[Point]) -> Point:
    def key(p: Point) -> tuple[float, float, int]:
        pp = p.per_problem(1)
        return (sum(pp.values()) / max(len(pp), 1), -p.temperature, -_RANK.get(p.role, 3))

    return max(points, key=key)


def difference(a: Point, b: Point, ks: Sequence[int], seed: int) -> dict[str, Any]:
    """b - a for each k both can estimate: ``{"pass@k": {"value", "ci95"}}``."""
    out = {}
    for k in ks:
        if k <= min(a.samples(), b.samples()):
            e = scoring.paired_difference(a.per_problem(k), b.per_problem(k), seed)
            out[f"pass@{k}"] = {"value": e.value, "ci95": [e.low, e.high]}
    return out


def verdict(points: Sequence[Point], ks: Sequence[int], seed: int = scoring.SEED, *,
            grid: bool = False, distillation: Decoding | None = None) -> dict[str, Any]:
    """Rows, each model's best, the skeptic's row, the differences and the sentence.
    ``distillation``: the run's T_train/top-k/top-p (default: the point with that role)."""
    ks = sorted({1, *ks})
    base = [p for p in points if p.model == "base"]
    tuned = [p for p in points if p.model == "tuned"]
    if distillation is None:
        distillation = next((p.decoding for p in base if p.role == DISTILLATION), None)
    skeptic = next((p for p in base if distillation is not None and p.same(distillation)),
                   None)
    bb, tb = best(base), best(tuned)
    diff = difference(bb, tb, ks, seed)
    vs = difference(skeptic, tb, ks, seed) if skeptic else {}
    rows = [row(p, ks, seed, distillation) for p in points]
    pick = {id(p): r for p, r in zip(points, rows)}
    return {"ks": ks, "rows": rows, "base_best": pick[id(bb)], "tuned_best": pick[id(tb)],
            "distillation_settings": pick[id(skeptic)] if skeptic else {},
            "difference": diff, "vs_distillation_settings": vs,
            "verdict": sentence(bb, tb, skeptic, diff, vs, len(base) if grid else 0)}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _interval(d: dict[str, Any]) -> str:
    lo, hi = d["ci95"]
    return f"95% interval {100 * lo:+.1f} to {100 * hi:+.1f}"


def sentence(bb: Point, tb: Point, skeptic: Point | None, diff: dict[str, Any],
             vs: dict[str, Any], grid_size: int) -> str:
    """The answer in words: against which base, by how much, how sure; then the skeptic's."""
    d1 = diff["pass@1"]
    p1 = sum(bb.per_problem(1).values()) / max(len(bb.counts), 1)
    which = (f"the best-tuned base model (best of {grid_size} base decodings: "
             f"{bb.decoding.describe()}, pass@1 {_pct(p1)})" if grid_size else
             f"the base model's best temperature at its own top-k/top-p "
             f"({bb.decoding.describe()}, pass@1 {_pct(p1)})")
    at = f"at {tb.decoding.describe()}"
    points = 100 * d1["value"]
    lo, hi = d1["ci95"]
    if lo > 0:
        out = f"SSD beat {which} by {points:+.1f} points pass@1 {at} ({_interval(d1)})."
    elif hi < 0:
        out = f"SSD fell short of {which} by {-points:.1f} points pass@1 {at} ({_interval(d1)})."
    else:
        out = (f"SSD did not clearly beat {which}: {points:+.1f} points pass@1 {at}, "
               f"{_interval(d1)}, which includes zero.")
    for k in sorted(diff, key=lambda s: int(s.split("@")[1]))[1:]:
        out += f" {k}: {100 * diff[k]['value']:+.1f} points ({_interval(diff[k])})."
    if skeptic is not None and vs:
        s1 = sum(skeptic.per_problem(1).values()) / max(len(skeptic.counts), 1)
        out += (f" Against the base model sampled at the distillation settings "
                f"({skeptic.decoding.describe()}, pass@1 {_pct(s1)}): "
                f"{100 * vs['pass@1']['value']:+.1f} points pass@1 ({_interval(vs['pass@1'])}).")
    if not grid_size:
        out += " (--base-grid also tunes the base model's top-k/top-p.)"
    return out
