"""The SSD sampling stage: one (or N) raw answers per prompt from the frozen model.

The prompt is rendered once with the model's own chat template; that exact text is stored
in every sample (``prompt_text``) so training sees what sampling saw. Samples are appended
as they finish; rerunning continues with the (prompt_id, sample_index) pairs still missing.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from ..backends.base import GenerationResult, SamplingEngine, SamplingParams
from ..config import SampleConfig, flag
from ..errors import Cancelled, UserError
from ..events import OnEvent, RunOpened, SampleWritten, StageFinished, StageStarted, ignore
from . import engines, filters, models, prompts as prompt_sources
from .generation import Item, derive_seed, generate
from .runs import Run

STAGE = "sample"
__all__ = ["STAGE", "SampleSummary", "check_resumable", "default_run_name", "derive_seed",
           "sample"]


def default_run_name(model: models.ModelRef) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-.")[:80] or "run"


def check_resumable(run: Run, cfg: SampleConfig) -> None:
    old = run.manifest.get("config", {}).get(STAGE)
    if not old:
        return
    for key, value in asdict(cfg).items():
        if key in SampleConfig.RESUMABLE_CHANGES or old.get(key) == value:
            continue
        raise UserError(f"run '{run.name}' was sampled with {flag(key)} {old.get(key)!r}, not "
                        f"{value!r}; use the same settings to resume, or another --run name")


@dataclass
class SampleSummary:
    samples: int = 0
    prompts: int = 0
    empty: int = 0
    stub: int = 0
    looped: int = 0
    length_capped: int = 0
    with_code: int = 0
    completion_tokens: int = 0

    @classmethod
    def of(cls, samples: list[dict[str, Any]]) -> "SampleSummary":
        s = cls(samples=len(samples), prompts=len({x["prompt_id"] for x in samples}))
        for x in samples:
            s.empty += x.get("degenerate") == "empty"
            s.stub += x.get("degenerate") == "stub"
            s.looped += bool(x.get("looped"))
            s.length_capped += x.get("finish_reason") == "length"
            s.with_code += bool(x.get("has_code"))
            s.completion_tokens += int(x.get("completion_tokens", 0))
        return s


def sample(model_ref: str, cfg: SampleConfig, run_name: str | None = None, *,
           on_event: OnEvent = ignore, cancel: threading.Event | None = None,
           engine: SamplingEngine | None = None,
           plan: dict[str, Any] | None = None) -> tuple[Run, SampleSummary]:
    """Run (or resume) the sampling stage. ``engine`` lets a caller reuse a loaded engine;
    ``plan`` (every stage's settings, from ``distill``) is recorded when the run opens."""
    cfg.validate()
    model = models.resolve(model_ref, on_event=on_event, weights=not cfg.endpoint)
    cfg = cfg.resolve(model.name)
    plist = prompt_sources.load(cfg.prompts, cfg.limit, on_event)
    with Run.create_or_open(run_name or default_run_name(model), model.to_manifest()) as run:
        on_event(RunOpened(run.name))
        check_resumable(run, cfg)
        run.manifest.setdefault("config", {})[STAGE] = asdict(cfg) | {"api_key": None}
        if plan is not None:
            run.manifest["plan"] = plan
        run.save()
        existing = run.read_samples(repair=True)
        done = {(s["prompt_id"], s["sample_index"]) for s in existing}
        todo = [Item((p.id, i), prompt_sources.messages(p, cfg.system_prompt))
                for p in plist for i in range(cfg.samples_per_prompt) if (p.id, i) not in done]
        total = len(plist) * cfg.samples_per_prompt
        on_event(StageStarted(STAGE, total, total - len(todo),
                              f"{model.name}, {cfg.decoding.describe()}"))
        report = None
        if todo:
            report = _sample_into(run, model, cfg, todo, total, on_event, cancel, engine)
        summary = SampleSummary.of(run.read_samples())
        if todo or run.stage_state(STAGE) != "done":
            run.record_artefact("samples.jsonl", lines=summary.samples)
            run.set_stage(STAGE, "done", summary=asdict(summary))
        finished = asdict(summary) | ({"endpoint": report} if report else {})
        on_event(StageFinished(STAGE, "done", finished))
        return run, summary


def _sample_into(run: Run, model: models.ModelRef, cfg: SampleConfig, todo: list[Item],
                 total: int, on_event: OnEvent, cancel: threading.Event | None,
                 engine: SamplingEngine | None) -> dict[str, Any] | None:
    """Generate ``todo`` into the run; returns the served engine's report, if any."""
    own = engine is None
    if engine is None:
        engine = _open(run, model, cfg, on_event)
    texts = {p_id: text for (p_id, _), text in ((i.key, i.messages[-1]["content"])
                                                 for i in todo)}

    def write(res: GenerationResult, prompt_text: str) -> None:
        pid, index = res.key
        rec = {"prompt_id": pid, "sample_index": index, "prompt": texts[pid],
               "prompt_text": prompt_text, "completion": res.text,
               "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
               "finish_reason": res.finish_reason, **filters.mark(res.text),
               "seed": derive_seed(cfg.seed, pid, index), "engine": engine.name}
        run.append_samples([rec])
        on_event(SampleWritten(STAGE, rec))

    d = cfg.decoding
    try:
        run.set_stage(STAGE, "running", engine=engine.name)
        generate(engine, todo, SamplingParams(d.temperature, d.top_k, d.top_p,
                                              cfg.max_new_tokens),
                 seed=cfg.seed, in_flight=cfg.in_flight(), stage=STAGE, total=total,
                 write=write, on_event=on_event, cancel=cancel)
    except Cancelled:
        run.set_stage(STAGE, "cancelled")
        on_event(StageFinished(STAGE, "cancelled", {"samples": len(run.read_samples())}))
        raise
    except BaseException as exc:
        run.set_stage(STAGE, "failed", error=f"{type(exc).__name__}: {exc}"[:300])
        on_event(StageFinished(STAGE, "failed"))
        raise
    finally:
        stats = engine.stats()
        if own:
            engine.close()
    return stats.report() if stats is not None else None


def _open(run: Run, model: models.ModelRef, cfg: SampleConfig,
          on_event: OnEvent) -> SamplingEngine:
    """The local engine, or the served one; a run records which served model made its
    samples and refuses samples from another one."""
    if not cfg.endpoint:
        return engines.open_local(model, cfg.backend, on_event)
    served = engines.open_endpoint(model, cfg.endpoint, api_key=cfg.api_key, chat=cfg.chat,
                                   on_event=on_event)
    model_id = served.engine.model
    old = run.manifest.get("endpoint")
    if old and old.get("model_id") != model_id:
        served.engine.close()
        raise UserError(f"run '{run.name}' was sampled from the served model "
                        f"'{old['model_id']}', but {cfg.endpoint} serves '{model_id}'; point "
                        "--endpoint at the same model, or use another --run name")
    run.manifest["endpoint"] = {"url": cfg.endpoint, "model_id": model_id,
                                "mode": "chat" if cfg.chat else "completions",
                                "server_template": cfg.chat,
                                "template_mismatch": served.template_mismatch}
    run.save()
    return served.engine
