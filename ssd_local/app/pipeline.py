"""``distill``: sample -> train -> fuse -> export (convert + quantize), one run.

Every stage is resumable on its own; rerunning the same command skips finished stages and
continues the first unfinished one. ``stop_after`` ends the chain after a stage.

Every stage's settings are recorded in the run's manifest (``plan``) when the run is opened,
before the first sample, so :func:`resume` continues a run with exactly the settings it
was started with, whichever stage it stopped in."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from ..config import STAGES, Decoding, ExportConfig, SampleConfig, TrainConfig, from_dict
from ..errors import UserError
from ..events import OnEvent, ignore
from . import export as export_stage, training
from .runs import Run
from .sampling import SampleSummary, sample

ORDER = STAGES


@dataclass(frozen=True)
class DistillPlan:
    """What a distillation was asked to do."""

    model: str
    sample: SampleConfig
    train: TrainConfig
    export: ExportConfig
    stop_after: str | None = None

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "sample": asdict(self.sample) | {"api_key": None},
                "train": asdict(self.train), "export": asdict(self.export),
                "stop_after": self.stop_after}


@dataclass(frozen=True)
class DistillResult:
    run: str
    sample: SampleSummary
    train: dict[str, Any] | None  # the train stage's summary (steps, losses, data)
    ggufs: dict[str, int]  # "gguf/NAME.gguf" -> bytes
    recommended: Decoding | None  # T_eval written into the tuned model


def distill(model_ref: str, sample_cfg: SampleConfig, train_cfg: TrainConfig,
            export_cfg: ExportConfig, run_name: str | None = None, *,
            stop_after: str | None = None, on_event: OnEvent = ignore,
            cancel: threading.Event | None = None) -> DistillResult:
    for c in (sample_cfg, train_cfg, export_cfg):
        c.validate()
    if stop_after is not None and stop_after not in ORDER:
        raise ValueError(stop_after)
    p = DistillPlan(model_ref, sample_cfg, train_cfg, export_cfg, stop_after)
    run, summary = sample(model_ref, sample_cfg, run_name, on_event=on_event, cancel=cancel,
                          plan=p.record())
    if stop_after != "sample":
        if Run.load(run.name).stage_state("train") != "done":
            training.train(run.name, train_cfg, on_event=on_event, cancel=cancel,
                           fuse_after=False)
        if stop_after != "train":
            if Run.load(run.name).stage_state("fuse") != "done":
                training.fuse(run.name, train_cfg, on_event=on_event)
            if stop_after != "fuse":
                export_stage.export(run.name, export_cfg, on_event=on_event)
    return _result(run.name, summary, stop_after != "sample")


def _result(name: str, summary: SampleSummary, trained: bool) -> DistillResult:
    man = Run.load(name).manifest
    train = man.get("stages", {}).get("train", {}).get("summary") if trained else None
    ggufs = {rel: a["bytes"] for rel, a in man.get("artefacts", {}).items()
             if rel.startswith("gguf/")} if trained else {}
    rec = man.get("recommended_decoding") if trained else None
    return DistillResult(name, summary, train or None, ggufs,
                         Decoding.from_dict(rec) if rec else None)


def planned(run_name: str) -> DistillPlan:
    """The settings a run was started with. Runs from before plans were recorded are
    rebuilt from their stage configs (and the export's quant types, where known)."""
    man = Run.load(run_name).manifest
    p = man.get("plan")
    if p:
        return DistillPlan(p["model"], from_dict(SampleConfig, p["sample"]),
                           from_dict(TrainConfig, p["train"]),
                           from_dict(ExportConfig, p["export"]), p.get("stop_after"))
    cfg = man.get("config", {})
    if "model" not in man:
        raise UserError(f"run '{run_name}' records no model; start it again with distill")
    quants = man.get("stages", {}).get("export", {}).get("quants")
    export = ExportConfig(",".join(quants)) if quants else ExportConfig()
    return DistillPlan(man["model"]["ref"], from_dict(SampleConfig, cfg.get("sample", {})),
                       from_dict(TrainConfig, cfg.get("train", {})), export)


def resume(run_name: str, *, on_event: OnEvent = ignore,
           cancel: threading.Event | None = None) -> DistillResult:
    """Continue a run with the settings it was started with (as rerunning the command
    that started it would)."""
    p = planned(run_name)
    return distill(p.model, p.sample, p.train, p.export, run_name, stop_after=p.stop_after,
                   on_event=on_event, cancel=cancel)
