"""The SSD training stage (fine-tune on the run's own samples) and the fuse stage (merge
the adapter into a standard transformers folder ``RUN/merged``).

The trainer comes from the backend registry and is driven through the ``Trainer``
protocol; nothing here knows which framework runs. Only the main process of a
multi-process (torchrun) launch writes the run: it holds the lock, the manifest,
``train_metrics.jsonl`` and the checkpoints."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..backends.base import Example, StepReport, Tokenizer, Trainer
from ..config import TrainConfig, flag, from_dict
from ..errors import Cancelled, UserError
from ..events import Log, OnEvent, Progress, StageFinished, StageStarted, Warning, ignore
from . import memory, models
from .prompts import chat
from .runs import Run, atomic_write_bytes, read_jsonl_repairing
from .trainset import DataReport, build_examples

STAGE, FUSE = "train", "fuse"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    train_loss: float
    val_loss: float | None
    tokens: int
    data: DataReport | None = None

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def model_of(run: Run, on_event: OnEvent = ignore) -> models.ModelRef:
    """The model a run started from, as it resolves now (it must be the same one)."""
    m = run.manifest.get("model", {})
    try:
        ref = models.resolve(m.get("ref", ""), on_event=on_event)
    except UserError as exc:
        raise UserError(f"run '{run.name}' was made with model '{m.get('ref')}', which is not "
                        f"available now ({exc})") from None
    if ref.identity != m.get("identity"):
        raise UserError(f"run '{run.name}' was made with '{m.get('identity')}' but "
                        f"'{m.get('ref')}' now resolves to '{ref.identity}'; start a new run")
    return ref


def check_template(samples: list[dict[str, Any]], tokenizer: Tokenizer,
                   system_prompt: str | None) -> None:
    """The samples must have been rendered with this tokenizer's chat template (the same
    model): re-render a few and compare."""
    for s in samples[:3]:
        if tokenizer.render(chat(s["prompt"], system_prompt)) != s["prompt_text"]:
            raise UserError("the samples were rendered with another chat template than this "
                            "model's tokenizer; resample with this model (a new --run)")


def check_resumable(run: Run, cfg: TrainConfig) -> None:
    old = run.manifest.get("config", {}).get(STAGE)
    if not old or not (run.path / "checkpoints").exists():
        return
    old = {"backend": "torch", **old}  # runs from before the mlx backend
    for key, value in {**asdict(cfg), "lr": cfg.peak_lr}.items():
        if key in TrainConfig.RESUMABLE_CHANGES or old.get(key) == value:
            continue
        raise UserError(f"run '{run.name}' is being trained with {flag(key)} "
                        f"{old.get(key)!r}, not {value!r}; use the same settings to resume, or "
                        "delete RUN/checkpoints to start training over")


def training_backend(run: Run, requested: str | None) -> str:
    """The backend that started the run's checkpoints, else the requested or automatic one.
    A run is never continued by the other backend: their checkpoints differ."""
    from ..backends import choose_training_backend
    from ..backends.train_common import checkpoint_backend, latest_checkpoint

    last = latest_checkpoint(run.path / "checkpoints")
    if last is None:
        return choose_training_backend(requested)
    made_with = checkpoint_backend(last)
    if requested and requested != made_with:
        raise UserError(f"run '{run.name}' has {made_with} checkpoints; resume with --backend "
                        f"{made_with}, or delete {run.path / 'checkpoints'} to start over with "
                        f"{requested}")
    return choose_training_backend(made_with)


def train(run_name: str, cfg: TrainConfig, *, on_event: OnEvent = ignore,
          cancel: threading.Event | None = None, fuse_after: bool = True) -> TrainResult:
    from ..backends.registry import open_trainer

    cfg.validate()
    run = Run.load(run_name)
    cfg = replace(cfg, backend=training_backend(run, cfg.backend))
    trainer = open_trainer(cfg.backend or "")
    main = trainer.world.main
    if main:
        run.lock()
    try:
        result = _train(run, cfg, trainer, on_event if main else ignore, cancel)
        if fuse_after and main:
            fuse(run.name, cfg, on_event=on_event, _run=run, _trainer=trainer)
        return result
    finally:
        run.unlock()


def _train(run: Run, cfg: TrainConfig, trainer: Trainer, on_event: OnEvent,
           cancel: threading.Event | None) -> TrainResult:
    from ..backends.train_common import latest_checkpoint, state_of, total_steps

    samples = run.read_samples()
    if not samples:
        raise UserError(f"run '{run.name}' has no samples yet; run `ssd-local sample MODEL "
                        f"--run {run.name}` first")
    if run.stage_state("sample") != "done":
        on_event(Warning(f"sampling of run '{run.name}' is not finished; training on the "
                         f"{len(samples)} samples there are"))
    folder = models.ensure_hf_folder(model_of(run, on_event), on_event)
    tok = trainer.tokenizer(folder)
    check_template(samples, tok, run.manifest.get("config", {}).get("sample", {})
                   .get("system_prompt"))
    train_set, val_set, rep = build_examples(samples, tok.encode, tok.eos_id, cfg.max_seq_len,
                                             cfg.val_fraction, cfg.seed, cfg.drop_looped)
    if not train_set:
        raise UserError(f"all {rep.samples} samples of run '{run.name}' were filtered out "
                        f"({rep.dropped_degenerate} degenerate, {rep.dropped_looped} looped); "
                        "sample more prompts")
    main = trainer.world.main
    total, _ = total_steps(len(train_set), cfg)
    asked, mem = cfg, memory_plan(folder, cfg, trainer, train_set)  # refuses before loading
    cfg = mem.apply(cfg)
    if main:
        check_resumable(run, asked)
        run.manifest.setdefault("config", {})[STAGE] = {**asdict(asked), "lr": asked.peak_lr}
        run.set_stage(STAGE, "running", data=asdict(rep), world_size=trainer.world.size,
                      memory=mem.record())
        on_event(Log(f"training on {rep.train} examples ({rep.val} held out; "
                     f"{rep.dropped_degenerate} degenerate dropped, {rep.truncated} cut at "
                     f"--max-seq-len, {rep.without_end_token} without an end token)", STAGE))
        on_event(Log(mem.note, STAGE))
    metrics = run.path / "train_metrics.jsonl"
    last = latest_checkpoint(run.path / "checkpoints")
    start = state_of(last)["step"] if last else 0
    if main:
        _trim_metrics(metrics, start)
    on_event(StageStarted(STAGE, total, start, ("LoRA" if not cfg.full else "full")
                          + f", {cfg.backend}"))
    try:
        out = trainer.train(folder, run.path, cfg, train_set, val_set,
                            on_step=_step_writer(metrics, on_event), cancel=cancel)
    except Cancelled:
        if main:
            run.set_stage(STAGE, "cancelled")
            on_event(StageFinished(STAGE, "cancelled"))
        raise
    except (MemoryError, RuntimeError) as exc:
        if _out_of_memory(exc):
            if main:
                run.set_stage(STAGE, "failed", error="out of memory")
            est = f", estimated {mem.estimate.total / memory.GiB:.1f} GiB" \
                if mem.estimate else ""
            raise UserError(f"out of memory while training{est}; lower --batch-size (now "
                            f"{cfg.batch_size}) or --max-seq-len (now {cfg.max_seq_len}), or "
                            "add --gradient-checkpointing; rerun to resume from the last "
                            "checkpoint") from None
        raise
    result = TrainResult(out.steps, out.train_loss, out.val_loss, out.tokens, rep)
    if main:
        run.set_stage(STAGE, "done", summary=result.summary())
        on_event(StageFinished(STAGE, "done", result.summary()))
    return result


def memory_plan(folder: Path, cfg: TrainConfig, trainer: Trainer,
                train_set: list[Example]) -> memory.MemoryPlan:
    """The micro-batch and checkpointing this training runs with, from the estimate of
    the model at ``folder`` (its config.json; no weights) against the trainer's free
    memory. Raises ``UserError`` with the fix when nothing allowed fits."""
    try:
        dims, why = memory.read_dims(folder), ""
    except UserError as exc:
        dims, why = None, str(exc)
    device = trainer.device()
    if cfg.fsdp and trainer.world.size > 1:
        device = replace(device, shards=trainer.world.size)
    work = memory.Workload(tuple(len(e.input_ids) for e in train_set),
                           tuple(e.n_response for e in train_set))
    return memory.plan(dims, cfg, device, work, why)


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "malloc" in text


def _step_writer(metrics: Path, on_event: OnEvent) -> Any:
    """Each step's report: a line in ``train_metrics.jsonl``, then a progress event."""

    def on_step(r: StepReport) -> None:
        row = {k: v for k, v in asdict(r).items() if v is not None}
        with open(metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        m = {"loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s,
             "peak_mem_mb": r.peak_mem_mb}
        if r.val_loss is not None:
            m["val_loss"] = r.val_loss
        on_event(Progress(STAGE, r.step, r.total, m))

    return on_step


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric rows past the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    rows = [r for r in read_jsonl_repairing(path) if r.get("step", 0) <= step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def fuse(run_name: str, cfg: TrainConfig | None = None, *, on_event: OnEvent = ignore,
         _run: Run | None = None, _trainer: Trainer | None = None) -> str:
    """Merge the trained adapter into the base weights: ``RUN/merged``."""
    from ..backends.registry import open_trainer

    run = _run or Run.load(run_name)
    own_lock = _run is None
    if own_lock:
        run.lock()
    try:
        saved = run.manifest.get("config", {}).get(STAGE)
        if not saved or run.stage_state(STAGE) != "done":
            raise UserError(f"run '{run.name}' has no finished training; run `ssd-local train "
                            f"{run.name}` first")
        cfg = cfg or from_dict(TrainConfig, saved)
        folder = models.ensure_hf_folder(model_of(run, on_event), on_event)
        d = cfg.eval_decoding(run.manifest.get("config", {}).get("sample", {}).get("preset"))
        on_event(StageStarted(FUSE, 1, 0, f"T_eval={d.temperature:g}"))
        run.set_stage(FUSE, "running")
        trainer = _trainer or open_trainer(saved.get("backend", "torch"))
        out = trainer.fuse(folder, run.path, d.as_dict(), full=bool(saved.get("full")))
        run.manifest["recommended_decoding"] = d.as_dict()
        run.manifest.pop("measured_decoding", None)  # a new tuned model: not measured yet
        run.set_stage(FUSE, "done", path=str(out))
        for f in sorted(Path(out).glob("*.safetensors")):  # one file, or shards
            run.record_artefact(f"merged/{f.name}")
        on_event(StageFinished(FUSE, "done", {"path": str(out)}))
        return str(out)
    finally:
        if own_lock:
            run.unlock()
