"""``distill``: sample -> train -> fuse -> export (convert + quantize), one run.

Every stage is resumable on its own; rerunning the same command skips finished stages and
continues the first unfinished one. ``stop_after`` ends the chain after a stage."""

from __future__ import annotations

import threading
from typing import Any

from . import export as export_stage, training
from .config import ExportConfig, SampleConfig, TrainConfig
from .events import OnEvent, ignore
from .runs import Run
from .sampling import sample

ORDER = ("sample", "train", "fuse", "export")


def distill(model_ref: str, sample_cfg: SampleConfig, train_cfg: TrainConfig,
            export_cfg: ExportConfig, run_name: str | None = None, *,
            stop_after: str | None = None, on_event: OnEvent = ignore,
            cancel: threading.Event | None = None) -> dict[str, Any]:
    for c in (sample_cfg, train_cfg, export_cfg):
        c.validate()
    if stop_after is not None and stop_after not in ORDER:
        raise ValueError(stop_after)
    run, s = sample(model_ref, sample_cfg, run_name, on_event=on_event, cancel=cancel)
    summary: dict[str, Any] = {"run": run.name, "sample": s.__dict__}
    if stop_after == "sample":
        return summary
    if Run.load(run.name).stage_state("train") != "done":
        training.train(run.name, train_cfg, on_event=on_event, cancel=cancel, fuse_after=False)
    if stop_after == "train":
        return _finish(run.name, summary)
    if Run.load(run.name).stage_state("fuse") != "done":
        training.fuse(run.name, train_cfg, on_event=on_event)
    if stop_after == "fuse":
        return _finish(run.name, summary)
    export_stage.export(run.name, export_cfg, on_event=on_event)
    return _finish(run.name, summary)


def _finish(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    run = Run.load(name)
    summary["train"] = run.manifest.get("stages", {}).get("train", {}).get("summary", {})
    summary["ggufs"] = {rel: a["bytes"] for rel, a in run.manifest.get("artefacts", {}).items()
                        if rel.startswith("gguf/")}
    summary["recommended_decoding"] = run.manifest.get("recommended_decoding")
    return summary
