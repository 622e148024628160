"""``ssd-local eval``: generate answers to a benchmark's problems, run them in the sandbox,
report pass@k with intervals.

What is evaluated: a run's tuned model (its most precise GGUF, else its merged folder) at the
run's recommended T_eval, or any model at its own recommended decoding. Answers are appended
to ``generations.jsonl`` as they finish, so an interrupted evaluation resumes; every sample's
verdict goes to ``results.jsonl`` and the numbers to ``summary.json``, in the run's
``evals/`` folder (or ``$SSD_LOCAL_HOME/evals/`` for a plain model).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ...backends.base import GenerationResult, SamplingEngine, SamplingParams
from ...config import QUANT_TYPES, SYSTEM_PROMPT, Decoding, EvalConfig, detect_preset, preset
from ...config.paths import home
from ...errors import Cancelled, UserError
from ...events import Log, OnEvent, Progress, StageFinished, StageStarted, ignore
from .. import decoding, engines, models
from ..generation import Item, generate
from ..prompts import chat
from ..runs import Run, atomic_write_bytes, atomic_write_json, read_jsonl_repairing, runs_root
from . import scoring
from .problems import Problem

STAGE = "eval"
GRADE = "grade"


# -- what is evaluated ------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    label: str  # shown to the user
    model: models.ModelRef | None  # None when generating through an endpoint only
    decoding: Decoding
    thinking: bool
    run: Run | None
    identity: str  # what makes two evaluations comparable (model identity)
    out_root: Path


def is_run(name: str) -> bool:
    return "/" not in name and (runs_root() / name / "manifest.json").exists()


def run_model(run: Run, quant: str | None = None) -> models.ModelRef:
    """A run's tuned model: its most precise GGUF (or ``quant``), else the merged folder."""
    from ..export import run_ggufs

    ggufs = run_ggufs(run)
    if quant:
        if quant not in ggufs:
            raise UserError(f"run '{run.name}' has no {quant} GGUF; it has: "
                            + (", ".join(sorted(ggufs)) or "none"))
        return models.resolve(str(ggufs[quant]))
    for q in QUANT_TYPES:  # most precise first
        if q in ggufs:
            return models.resolve(str(ggufs[q]))
    merged = run.path / "merged"
    if (merged / "config.json").exists():
        return models.resolve(str(merged))
    raise UserError(f"run '{run.name}' has no tuned model yet; finish it with `ssd-local "
                    f"distill` (or `ssd-local train {run.name}`)")


def resolve_target(ref: str, cfg: EvalConfig, on_event: OnEvent = ignore, *,
                   base: bool = False) -> Target:
    """``ref``: a run (its tuned model; with ``base``, the model it started from) or a model."""
    if is_run(ref):
        run = Run.load(ref)
        thinking = preset(decoding.run_preset(run)).thinking
        if base:
            model = models.resolve(run.manifest["model"]["ref"], on_event=on_event)
            return Target(f"{model.name} (base of {run.name})", model,
                          decoding.base_of(run).decoding, thinking, run,
                          f"base:{model.identity}", run.path / "evals")
        model = run_model(run, cfg.quant)
        return Target(f"{run.name} ({model.path.name})", model, decoding.tuned(run).decoding,
                      thinking, run, f"run:{run.name}:{model.path.name}", run.path / "evals")
    if cfg.endpoint and ref in ("", "-"):
        return Target(cfg.endpoint, None, preset(None).eval, False, None,
                      f"endpoint:{cfg.endpoint}", home() / "evals")
    model = models.resolve(ref, on_event=on_event)
    return Target(model.name, model, decoding.base(model).decoding,
                  preset(detect_preset(model.name)).thinking, None, model.identity,
                  home() / "evals")


# -- the evaluation ---------------------------------------------------------------------------
@dataclass
class EvalResult:
    folder: Path
    summary: dict[str, Any]
    graded: list[scoring.Graded]


def load_problems(cfg: EvalConfig, on_event: OnEvent = ignore) -> list[Problem]:
    from .benchmarks import load_benchmark

    if not cfg.benchmark:
        raise UserError("name a benchmark with --benchmark (humaneval, humaneval-plus, "
                        "mbpp-plus, livecodebench), or score files with --problems and "
                        "--completions")
    return load_benchmark(cfg.benchmark, limit=cfg.limit, release=cfg.release,
                          start_date=cfg.start_date, end_date=cfg.end_date, on_event=on_event)


def guard_contamination(run: Run | None, problems: Sequence[Problem], allow: bool,
                        on_event: OnEvent = ignore) -> list[dict[str, Any]]:
    """Refuse to score a run on problems it trained on (unless ``allow``)."""
    from .contamination import find_overlaps

    if run is None:
        return []
    seen: dict[str, str] = {}
    for s in run.read_samples():
        seen.setdefault(s["prompt_id"], s.get("prompt", ""))
    overlaps = find_overlaps(seen.items(), problems)
    found = [{"task_id": o.task_id, "prompt_id": o.prompt_id, "share": round(o.share, 3)}
             for o in overlaps]
    if overlaps and not allow:
        names = ", ".join(f"{o.task_id} (~{o.prompt_id}, {o.share:.0%})" for o in overlaps[:8])
        more = f" and {len(overlaps) - 8} more" if len(overlaps) > 8 else ""
        raise UserError(f"run '{run.name}' trained on prompts that overlap {len(overlaps)} "
                        f"benchmark problem(s): {names}{more}; evaluate on other problems, "
                        "or pass --allow-overlap to score anyway")
    if overlaps:
        on_event(Log(f"scoring despite {len(overlaps)} overlapping problem(s) "
                     "(--allow-overlap)", STAGE))
    return found


def folder_for(target: Target, cfg: EvalConfig, dec: Decoding) -> Path:
    """One folder per (model, benchmark, decoding, length cap, seed); same settings resume."""
    key = {"identity": target.identity, "benchmark": cfg.benchmark, "release": cfg.release,
           "start": cfg.start_date, "end": cfg.end_date, "decoding": asdict(dec),
           "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed}
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    bench = (cfg.benchmark or "files").split(":")[0]
    name = f"{bench}-T{dec.temperature:g}-k{dec.top_k}-p{dec.top_p:g}-{h}"
    if target.run is None:
        from ..sampling import default_run_name

        name = f"{default_run_name(target.model) if target.model else 'endpoint'}-{name}"
    elif target.identity.startswith("base:"):
        name = f"base-{name}"
    return target.out_root / name


def evaluate(ref: str, cfg: EvalConfig, *, on_event: OnEvent = ignore,
             cancel: threading.Event | None = None, base: bool = False,
             engine: SamplingEngine | None = None, problems: list[Problem] | None = None,
             overlaps: list[dict[str, Any]] | None = None) -> EvalResult:
    """Generate (resuming), grade, summarise. A sweep passes its ``engine``, ``problems``
    and the ``overlaps`` its one contamination check found, so none is redone per point."""
    cfg.validate()
    ks, n = cfg.ks(), cfg.samples()
    problems = problems if problems is not None else load_problems(cfg, on_event)
    if overlaps is None:
        overlaps = guard_contamination(Run.load(ref) if is_run(ref) else None, problems,
                                       cfg.allow_overlap, on_event)
    target = resolve_target(ref, cfg, on_event, base=base)
    dec = cfg.over(target.decoding)
    folder = folder_for(target, cfg, dec)
    folder.mkdir(parents=True, exist_ok=True)
    gens_path = folder / "generations.jsonl"
    atomic_write_json(folder / "config.json", {
        "target": target.label, "identity": target.identity, "decoding": asdict(dec),
        "config": asdict(cfg) | {"api_key": None}, "thinking": target.thinking})
    have: dict[tuple[str, int], str] = {}
    for rec in read_jsonl_repairing(gens_path, repair=True):
        have[(rec["task_id"], rec["index"])] = rec["completion"]
    system = None if target.thinking else SYSTEM_PROMPT
    todo = [Item((p.task_id, i), chat(p.prompt, system)) for p in problems for i in range(n)
            if (p.task_id, i) not in have]
    total = len(problems) * n
    on_event(StageStarted(STAGE, total, total - len(todo),
                          f"{target.label} on {cfg.benchmark}, {dec.describe()}"))
    if todo:
        own = engine is None
        engine = engine or engines.open_for(target.model, cfg,
                                            chat=cfg.chat or target.model is None,
                                            on_event=on_event)
        try:
            _generate(engine, cfg, dec, todo, gens_path, have, total, on_event, cancel)
        finally:
            if own:
                engine.close()
    completions = {p.task_id: [have[(p.task_id, i)] for i in range(n)] for p in problems}
    graded = grade(problems, completions, cfg, folder, on_event, cancel)
    summary = scoring.summarise(problems, graded, ks, seed=cfg.seed)
    summary.update({"benchmark": cfg.benchmark, "target": target.label,
                    "decoding": asdict(dec), "overlaps": overlaps,
                    "sandbox": sandbox_protections()})
    atomic_write_json(folder / "summary.json", summary)
    on_event(StageFinished(STAGE, "done", {k: v for k, v in summary.items()
                                           if k.startswith("pass@")}))
    return EvalResult(folder, summary, graded)


def _generate(engine: SamplingEngine, cfg: EvalConfig, dec: Decoding, todo: list[Item],
              gens_path: Path, have: dict, total: int, on_event: OnEvent,
              cancel: threading.Event | None) -> None:
    fd = os.open(gens_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(res: GenerationResult, _prompt_text: str) -> None:
        rec = {"task_id": res.key[0], "index": res.key[1], "completion": res.text,
               "completion_tokens": res.completion_tokens, "finish_reason": res.finish_reason}
        os.write(fd, (json.dumps(rec, ensure_ascii=False) + "\n").encode())
        have[res.key] = res.text

    try:
        generate(engine, todo, SamplingParams(dec.temperature, dec.top_k, dec.top_p,
                                              cfg.max_new_tokens),
                 seed=cfg.seed, in_flight=cfg.in_flight(), stage=STAGE, total=total,
                 write=write, on_event=on_event, cancel=cancel)
        os.fsync(fd)
    except Cancelled:
        raise Cancelled(f"evaluation stopped after {len(have)} of {total} answers") from None
    finally:
        os.close(fd)


def grade(problems: Sequence[Problem], completions: dict[str, list[str]], cfg: EvalConfig,
          folder: Path | None, on_event: OnEvent, cancel: threading.Event | None,
          chat: bool = True) -> list[scoring.Graded]:
    total = sum(len(v) for v in completions.values())
    on_event(StageStarted(GRADE, total, 0, "running samples in the sandbox"))
    done = [0, 0]

    def on_graded(g: scoring.Graded) -> None:
        done[0] += 1
        done[1] += g.passed
        on_event(Progress(GRADE, done[0], total, {"passed": done[1]}))

    graded = scoring.grade(problems, completions, chat=chat, limits=cfg.limits(),
                           workers=cfg.workers, cancel=cancel, on_graded=on_graded)
    if cancel is not None and cancel.is_set():
        raise Cancelled("grading stopped; rerun to grade again")
    if folder is not None:
        atomic_write_bytes(folder / "results.jsonl", "".join(
            json.dumps(g.record(), ensure_ascii=False) + "\n" for g in graded).encode())
    on_event(StageFinished(GRADE, "done", {"passed": done[1], "samples": total}))
    return graded


def score_files(problems_file: Path, completions_file: Path, cfg: EvalConfig, *,
                out: Path | None = None, on_event: OnEvent = ignore,
                cancel: threading.Event | None = None) -> EvalResult:
    """``eval --problems P --completions C``: score completions made elsewhere."""
    from .problems import load_completions_file, load_problems_file

    problems = load_problems_file(problems_file)
    comps = load_completions_file(completions_file, problems)
    problems = [p for p in problems if p.task_id in comps]
    if out is None:
        h = hashlib.sha1(problems_file.read_bytes() + b"\0" + completions_file.read_bytes())
        out = home() / "evals" / f"files-{completions_file.stem}-{h.hexdigest()[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    ks = cfg.ks()
    n_min = min(len(v) for v in comps.values())
    if n_min < max(ks):
        raise UserError(f"pass@{max(ks)} needs {max(ks)} completions for every task; the "
                        f"fewest here is {n_min}; lower --k")
    graded = grade(problems, comps, cfg, out, on_event, cancel, chat=False)
    summary = scoring.summarise(problems, graded, ks, seed=cfg.seed)
    summary["sandbox"] = sandbox_protections()
    atomic_write_json(out / "summary.json", summary)
    return EvalResult(out, summary, graded)


def sandbox_protections() -> dict[str, str]:
    from .sandbox import protections

    return protections()
