"""``ssd-local compare RUN``: the check that keeps SSD honest.

The base model and the distilled model answer the same problems at every temperature of a
sweep, each with its own top-k/top-p. Two more base rows answer the skeptics:

- the base model decoded at the run's own distillation settings (T_train/top-k/top-p, from
  the run's recorded sample config): does sampling the base like that already match SSD?
- with ``--base-grid``, the base model also over a small top-k x top-p grid at every
  temperature (``CompareConfig.base_grid_top_k/_top_p``), so the verdict is against the
  best-*tuned* base, as the paper argues.

SSD's claim holds only if the tuned model's best setting beats the base model's best; the
difference comes with a paired bootstrap interval over problems, for every k asked. The
tuned model's best decoding is then written to the run (``app/measured.py``), so ``serve``,
``eval`` and the exports use what was measured instead of a preset. The verdict and its
numbers are in ``verdict.py``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from ...config import CompareConfig, Decoding
from ...errors import UserError
from ...events import Log, OnEvent, ignore
from .. import decoding, engines, measured
from ..runs import Run, atomic_write_json
from . import scoring
from .evaluate import evaluate, guard_contamination, is_run, load_problems, resolve_target
from .plot import plot
from .problems import Problem
from .verdict import DISTILLATION, GRID, SWEEP, Point, verdict


@dataclass(frozen=True)
class CompareResult:
    """What ``compare`` found; ``record()`` is the JSON written next to the plot."""

    run: str
    benchmark: str
    problems: int
    samples_per_problem: int
    ks: list[int]
    base_grid: bool
    rows: list[dict[str, Any]]  # every evaluation: model, role, decoding, pass@k, ci95, no_code
    base_best: dict[str, Any]
    tuned_best: dict[str, Any]
    distillation_settings: dict[str, Any]  # the base at the run's T_train/top-k/top-p
    difference: dict[str, Any]  # tuned best - base best: {"pass@k": {value, ci95}}
    vs_distillation_settings: dict[str, Any]  # tuned best - base at the distillation settings
    verdict: str
    plot: str
    measured: dict[str, Any] | None  # what was written to the run (None: --no-adopt)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def plans(run: Run, cfg: CompareConfig) -> dict[str, list[tuple[Decoding, str]]]:
    """Every decoding each model is evaluated at, with its role, without repeats. At T=0
    (greedy) top-k/top-p change nothing, so the grid has one point there."""
    own_base, own_tuned = decoding.base_of(run).decoding, decoding.tuned(run).decoding
    base: list[tuple[Decoding, str]] = [(own_base.overridden(t), SWEEP) for t in cfg.sweep()]
    if cfg.base_grid:
        base += [(Decoding(t, k, p), GRID) for t in cfg.sweep() if t > 0
                 for k in cfg.grid_top_k() for p in cfg.grid_top_p()]
    base.append((decoding.train_of(run).decoding, DISTILLATION))
    seen: set[Decoding] = set()
    unique = []
    for d, role in base:
        key = d if d.temperature > 0 else Decoding(0.0, 0, 1.0)
        if key not in seen:
            seen.add(key)
            unique.append((d, role))
    return {"base": unique, "tuned": [(own_tuned.overridden(t), SWEEP) for t in cfg.sweep()]}


def compare(run_name: str, cfg: CompareConfig, *, on_event: OnEvent = ignore,
            cancel: threading.Event | None = None) -> CompareResult:
    if not is_run(run_name):
        raise UserError(f"no run named '{run_name}'; see `ssd-local runs`")
    cfg.validate()
    run = Run.load(run_name)
    problems = load_problems(cfg, on_event)
    overlaps = guard_contamination(run, problems, cfg.allow_overlap, on_event)
    points: list[Point] = []
    for side, plan in plans(run, cfg).items():
        points += _side(run_name, cfg, side, plan, problems, overlaps, on_event, cancel)
    v = verdict(points, cfg.ks(), cfg.seed, grid=cfg.base_grid,
                distillation=decoding.train_of(run).decoding)
    out = run.path / "evals"
    bench = (cfg.benchmark or "").split(":")[0]
    json_path = out / f"compare-{bench}.json"
    png = plot(v, out / f"compare-{bench}.png",
               f"{run.name} on {bench} ({len(problems)} problems)")
    rec = None
    if cfg.adopt:
        rec = measured.record(v["tuned_best"], benchmark=cfg.benchmark, problems=len(problems),
                              samples=cfg.samples(), comparison=json_path,
                              settings={"max_new_tokens": cfg.max_new_tokens,
                                        "seed": cfg.seed, "k": cfg.k})
        if not measured.adopt(run.name, rec, on_event):
            rec = None
    result = CompareResult(run.name, cfg.benchmark, len(problems), cfg.samples(), v["ks"],
                           cfg.base_grid, v["rows"], v["base_best"], v["tuned_best"],
                           v["distillation_settings"], v["difference"],
                           v["vs_distillation_settings"], v["verdict"], str(png), rec)
    atomic_write_json(json_path, result.record())
    return result


def _side(run_name: str, cfg: CompareConfig, side: str, plan: Sequence[tuple[Decoding, str]],
          problems: list[Problem], overlaps: list[dict[str, Any]], on_event: OnEvent,
          cancel: threading.Event | None) -> list[Point]:
    """One model (``side``) at every decoding of its plan, on one loaded engine."""
    base = side == "base"
    target = resolve_target(run_name, cfg, on_event, base=base)
    on_event(Log(f"{side}: {target.label}, {len(plan)} decodings"))
    engine = engines.open_for(target.model, cfg, chat=cfg.chat or target.model is None,
                              on_event=on_event)
    points = []
    try:
        for d, role in plan:
            c = replace(cfg, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p)
            r = evaluate(run_name, c, on_event=on_event, cancel=cancel, base=base,
                         engine=engine, problems=problems, overlaps=overlaps)
            points.append(Point(side, d, scoring.counts(r.graded), role,
                                no_code=scoring.no_code(r.graded), folder=r.folder.name))
    finally:
        engine.close()
    return points

