"""The SSD sampling stage: one (or N) raw answers per prompt from the frozen model.

The prompt is rendered once with the model's own chat template; that exact text is stored
in every sample (``prompt_text``) so training sees what sampling saw. Samples are appended
as they finish; rerunning continues with the (prompt_id, sample_index) pairs still missing.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import filters, models, prompts as prompt_sources
from .config import SampleConfig
from .errors import Cancelled, UserError
from .events import OnEvent, Progress, SampleWritten, StageFinished, StageStarted, ignore
from .runs import Run

STAGE = "sample"


def derive_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    h = hashlib.sha256(f"{seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def default_run_name(model: models.ModelRef) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-.")[:80] or "run"


def open_engine(model: models.ModelRef, backend: str, on_event: OnEvent = ignore) -> Any:
    from ..backends import choose_sampling_backend

    name = choose_sampling_backend(model.kind, backend)
    if name == "llamacpp":
        if model.kind != "gguf":
            raise UserError("the llamacpp backend samples GGUF models; use --backend torch for "
                            "a Hugging Face folder, or pass a .gguf file")
        from ..backends.llamacpp import LlamaCppEngine

        return LlamaCppEngine(model.path)
    if name == "torch":
        from ..backends.torch import TorchEngine

        return TorchEngine(models.ensure_hf_folder(model, on_event))
    if name == "mlx":
        from ..backends import is_available
        from ..backends.mlx import MlxEngine

        if model.kind == "gguf" and not is_available("torch"):
            raise UserError("the mlx backend needs a transformers folder, and converting this "
                            "GGUF needs torch: `pip install 'ssd-local[torch]'`, or pass an "
                            "HF folder or hub id, or use --backend llamacpp")
        return MlxEngine(models.ensure_hf_folder(model, on_event))
    raise UserError(f"unknown sampling backend '{name}'; use llamacpp, torch or mlx")


def check_resumable(run: Run, cfg: SampleConfig) -> None:
    old = run.manifest.get("config", {}).get(STAGE)
    if not old:
        return
    new = asdict(cfg)
    for key, value in new.items():
        if key in SampleConfig.RESUMABLE_CHANGES or old.get(key) == value:
            continue
        flag = "--" + key.replace("_", "-")
        raise UserError(f"run '{run.name}' was sampled with {flag} {old.get(key)!r}, not "
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
           engine: Any = None) -> tuple[Run, SampleSummary]:
    """Run (or resume) the sampling stage. ``engine`` lets a caller reuse a loaded engine."""
    cfg.validate()
    model = models.resolve(model_ref, on_event=on_event, weights=not cfg.endpoint)
    cfg = cfg.resolve(model.name)
    plist = prompt_sources.load(cfg.prompts, cfg.limit, on_event)
    with Run.create_or_open(run_name or default_run_name(model), model.to_manifest()) as run:
        check_resumable(run, cfg)
        run.manifest.setdefault("config", {})[STAGE] = asdict(cfg) | {"api_key": None}
        run.save()
        existing = run.read_samples(repair=True)
        done = {(s["prompt_id"], s["sample_index"]) for s in existing}
        todo = [(p, i) for p in plist for i in range(cfg.samples_per_prompt)
                if (p.id, i) not in done]
        total = len(plist) * cfg.samples_per_prompt
        already = total - len(todo)
        on_event(StageStarted(STAGE, total, already, f"{model.name}, {cfg.decoding.describe()}"))
        if todo:
            own = engine is None
            if engine is None and cfg.endpoint:
                engine = open_endpoint(run, model, cfg, on_event)
            engine = engine or open_engine(model, cfg.backend, on_event)
            try:
                _generate(run, engine, cfg, todo, already, total, on_event, cancel)
            except Cancelled:
                raise
            except BaseException as exc:
                run.set_stage(STAGE, "failed", error=f"{type(exc).__name__}: {exc}"[:300])
                on_event(StageFinished(STAGE, "failed"))
                raise
            finally:
                if own:
                    engine.close()
        summary = SampleSummary.of(run.read_samples())
        if todo or run.stage_state(STAGE) != "done":
            run.record_artefact("samples.jsonl", lines=summary.samples)
            run.set_stage(STAGE, "done", summary=asdict(summary))
        done = asdict(summary)
        if todo and getattr(engine, "stats", None) is not None:
            done["endpoint"] = endpoint_report(engine.stats)
        on_event(StageFinished(STAGE, "done", done))
        return run, summary


def open_endpoint(run: Run, model: models.ModelRef, cfg: SampleConfig,
                  on_event: OnEvent) -> Any:
    """The served engine; the run records which served model made its samples and refuses
    samples from another one."""
    from .endpoints import EndpointSession

    assert cfg.endpoint is not None
    session = EndpointSession(model, cfg.endpoint, api_key=cfg.api_key, chat=cfg.chat,
                              on_event=on_event)
    served = session.engine.model
    old = run.manifest.get("endpoint")
    if old and old.get("model_id") != served:
        session.close()
        raise UserError(f"run '{run.name}' was sampled from the served model "
                        f"'{old['model_id']}', but {cfg.endpoint} serves '{served}'; point "
                        "--endpoint at the same model, or use another --run name")
    run.manifest["endpoint"] = {"url": cfg.endpoint, "model_id": served,
                                "mode": "chat" if cfg.chat else "completions",
                                "server_template": cfg.chat,
                                "template_mismatch": session.template_mismatch}
    run.save()
    return session


def endpoint_report(stats: Any) -> dict[str, Any]:
    return {"requests": stats.requests, "retries": stats.retries,
            "retry_reasons": dict(stats.retry_reasons), "failed": len(stats.failed)}


def _generate(run: Run, engine: Any, cfg: SampleConfig, todo: list, already: int, total: int,
              on_event: OnEvent, cancel: threading.Event | None) -> None:
    from ..backends.base import GenerationRequest, SamplingParams

    rendered: dict[str, str] = {}
    by_key = {}
    requests = []
    for p, i in todo:
        if p.id not in rendered:
            rendered[p.id] = engine.render(prompt_sources.messages(p, cfg.system_prompt))
        by_key[(p.id, i)] = p
        requests.append(GenerationRequest((p.id, i), rendered[p.id],
                                          derive_seed(cfg.seed, p.id, i)))
    d = cfg.decoding
    params = SamplingParams(d.temperature, d.top_k, d.top_p, cfg.max_new_tokens)
    run.set_stage(STAGE, "running", engine=engine.name)
    start, n_new, tokens = time.monotonic(), 0, 0
    for res in engine.generate(requests, params, batch_size=cfg.batch_size, cancel=cancel):
        p = by_key[res.key]
        rec = {"prompt_id": p.id, "sample_index": res.key[1], "prompt": p.text,
               "prompt_text": rendered[p.id], "completion": res.text,
               "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
               "finish_reason": res.finish_reason, **filters.mark(res.text),
               "seed": derive_seed(cfg.seed, p.id, res.key[1]), "engine": engine.name}
        run.append_samples([rec])
        n_new += 1
        tokens += res.completion_tokens
        dt = max(time.monotonic() - start, 1e-9)
        on_event(SampleWritten(STAGE, rec))
        metrics = {"samples_per_s": n_new / dt, "tokens_per_s": tokens / dt}
        stats = getattr(engine, "stats", None)
        if stats is not None:
            metrics.update(in_flight=stats.in_flight, retries=stats.retries)
        on_event(Progress(STAGE, already + n_new, total, metrics))
    if cancel is not None and cancel.is_set():
        run.set_stage(STAGE, "cancelled")
        on_event(StageFinished(STAGE, "cancelled", {"samples": already + n_new}))
        raise Cancelled(f"sampling stopped after {already + n_new} of {total} samples")
