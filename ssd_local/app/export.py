"""The export stage: ``RUN/merged`` -> f16 GGUF with llama.cpp's own converter -> the
requested quant types with llama.cpp's quantizer. The GGUF's ``general.sampling.*`` keys
(what llama.cpp's own tools decode with by default) carry the tuned model's decoding as
``decoding.tuned`` chooses it: the measured best once ``compare`` ran, else the preset's.
Each GGUF is loaded and asked for a few tokens before it counts as done; sizes and
checksums go into the manifest; converter and quantizer logs go to
``RUN/logs/export.log``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import ExportConfig
from ..errors import UserError
from ..events import Log, OnEvent, Progress, StageFinished, StageStarted, ignore
from .runs import Run, sha256_file

STAGE = "export"


@dataclass(frozen=True)
class GGUF:
    quant: str
    path: Path
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportResult:
    ggufs: dict[str, GGUF]  # by quant type, in the order asked for


def gguf_name(run: Run, quant: str) -> str:
    return f"{run.name}-{quant}.gguf"


def smoke_test(path: Path) -> str:
    """Load the GGUF with llama.cpp and generate a few tokens (greedy)."""
    from ..backends.base import GenerationRequest, SamplingParams
    from ..backends.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(path)
    try:
        text = eng.render([{"role": "user", "content": "Write a Python function that adds "
                            "two numbers."}])
        out = list(eng.generate([GenerationRequest(("smoke", 0), text, 0)],
                                SamplingParams(0.0, 0, 1.0, 8), batch_size=1))
    finally:
        eng.close()
    if not out or out[0].completion_tokens == 0 and out[0].finish_reason != "stop":
        raise UserError(f"{path.name} loads but generates nothing; see the export log")
    return out[0].text


def export(run_name: str, cfg: ExportConfig, *, on_event: OnEvent = ignore) -> ExportResult:
    from ..backends import converter
    from ..backends.gguf_meta import sampling_keys
    from ..backends.llamacpp_quantize import quantize
    from . import decoding

    quants = cfg.quants()
    run = Run.load(run_name)
    run.lock()
    try:
        merged = run.path / "merged"
        if run.stage_state("fuse") != "done" or not (merged / "config.json").exists():
            raise UserError(f"run '{run.name}' has no merged model yet; run `ssd-local train "
                            f"{run.name}` first")
        out_dir, log = run.path / "gguf", run.path / "logs" / "export.log"
        out_dir.mkdir(parents=True, exist_ok=True)
        arts = run.manifest.setdefault("artefacts", {})
        todo = [q for q in quants if not _done(run, q)]
        on_event(StageStarted(STAGE, len(quants), len(quants) - len(todo), ", ".join(quants)))
        run.set_stage(STAGE, "running", quants=quants)
        f16 = out_dir / gguf_name(run, "f16")
        if todo and not f16.exists():
            chosen = decoding.tuned(run)
            on_event(Log(f"converting {merged} to GGUF with llama.cpp's converter; its "
                         f"sampling settings: {chosen.describe()}", STAGE))
            tmp = out_dir / f".{f16.name}.tmp"
            converter.convert(merged, tmp, log, metadata=sampling_keys(chosen.decoding))
            os.replace(tmp, f16)
        for q in todo:
            final = out_dir / gguf_name(run, q)
            if q != "f16":
                tmp = out_dir / f".{final.name}.tmp"
                quantize(f16, tmp, q, log)
                smoke_test(tmp)
                os.replace(tmp, final)
            else:
                smoke_test(final)
            run.record_artefact(f"gguf/{final.name}", quant=q)
            on_event(Progress(STAGE, len(quants) - len(todo) + todo.index(q) + 1, len(quants)))
        if "f16" not in quants and f16.exists():
            f16.unlink()  # the intermediate, when not asked for
        ggufs = {}
        for q in quants:
            rel = f"gguf/{gguf_name(run, q)}"
            ggufs[q] = GGUF(q, run.path / rel, arts[rel]["bytes"], arts[rel]["sha256"])
        run.set_stage(STAGE, "done", quants=quants)
        on_event(StageFinished(STAGE, "done", {q: g.bytes for q, g in ggufs.items()}))
        return ExportResult(ggufs)
    except BaseException:
        if run.stage_state(STAGE) == "running":
            run.set_stage(STAGE, "failed")
        raise
    finally:
        run.unlock()


def _done(run: Run, quant: str) -> bool:
    rel = f"gguf/{gguf_name(run, quant)}"
    art = run.manifest.get("artefacts", {}).get(rel)
    p = run.path / rel
    return bool(art and p.exists() and p.stat().st_size == art["bytes"]
                and sha256_file(p) == art["sha256"])


def run_ggufs(run: Run) -> dict[str, Path]:
    """The run's finished GGUFs by quant type."""
    out = {}
    for rel, art in run.manifest.get("artefacts", {}).items():
        if rel.startswith("gguf/") and (run.path / rel).exists():
            out[art.get("quant", rel)] = run.path / rel
    return out
