"""The SSD training stage (fine-tune on the run's own samples) and the fuse stage (merge
the adapter into a standard transformers folder ``RUN/merged``).

Only the main process of a multi-process (torchrun) launch writes the run: it holds the
lock, the manifest, ``train_metrics.jsonl`` and the checkpoints."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import models
from .config import TrainConfig
from .errors import Cancelled, UserError
from .events import Log, OnEvent, Progress, StageFinished, StageStarted, Warning, ignore
from .runs import Run, atomic_write_bytes, read_jsonl_repairing

STAGE, FUSE = "train", "fuse"


def _model_of(run: Run, on_event: OnEvent) -> models.ModelRef:
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


def check_template(samples: list[dict[str, Any]], tokenizer: Any, system_prompt: str | None
                   ) -> None:
    """The samples must have been rendered with this tokenizer's chat template (the same
    model): re-render a few and compare."""
    for s in samples[:3]:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": s["prompt"]}]
        again = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if again != s["prompt_text"]:
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
        raise UserError(f"run '{run.name}' is being trained with --{key.replace('_', '-')} "
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


@dataclass(frozen=True)
class _OneProcess:
    rank: int = 0
    size: int = 1
    main: bool = True


def train(run_name: str, cfg: TrainConfig, *, on_event: OnEvent = ignore,
          cancel: threading.Event | None = None, fuse_after: bool = True) -> dict[str, Any]:
    cfg.validate()
    run = Run.load(run_name)
    cfg = replace(cfg, backend=training_backend(run, cfg.backend))
    if cfg.backend == "mlx":
        world: Any = _OneProcess()
    else:
        from ..backends import torch_train as tt

        world = tt.init_world()
    if world.main:
        run.lock()
    try:
        return _train(run, cfg, world, on_event if world.main else ignore, cancel, fuse_after)
    finally:
        run.unlock()


def _train(run: Run, cfg: TrainConfig, world: Any, on_event: OnEvent,
           cancel: threading.Event | None, fuse_after: bool) -> dict[str, Any]:
    from ..backends import train_common as tc
    from .trainset import build_examples

    samples = run.read_samples()
    if not samples:
        raise UserError(f"run '{run.name}' has no samples yet; run `ssd-local sample MODEL "
                        f"--run {run.name}` first")
    if run.stage_state("sample") != "done":
        on_event(Warning(f"sampling of run '{run.name}' is not finished; training on the "
                         f"{len(samples)} samples there are"))
    model = _model_of(run, on_event)
    folder = models.ensure_hf_folder(model, on_event)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    check_template(samples, tok, run.manifest.get("config", {}).get("sample", {})
                   .get("system_prompt"))
    train_set, val_set, rep = build_examples(
        samples, lambda t: tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id,
        cfg.max_seq_len, cfg.val_fraction, cfg.seed, cfg.drop_looped)
    if not train_set:
        raise UserError(f"all {rep.samples} samples of run '{run.name}' were filtered out "
                        f"({rep.dropped_degenerate} degenerate, {rep.dropped_looped} looped); "
                        "sample more prompts")
    total, _ = tc.total_steps(len(train_set), cfg)
    if world.main:
        check_resumable(run, cfg)
        run.manifest.setdefault("config", {})[STAGE] = {**asdict(cfg), "lr": cfg.peak_lr}
        run.set_stage(STAGE, "running", data=asdict(rep), world_size=world.size)
        on_event(Log(f"training on {rep.train} examples ({rep.val} held out; "
                     f"{rep.dropped_degenerate} degenerate dropped, {rep.truncated} cut at "
                     f"--max-seq-len, {rep.without_end_token} without an end token)", STAGE))
    metrics = run.path / "train_metrics.jsonl"
    last = tc.latest_checkpoint(run.path / "checkpoints")
    start = json.loads((last / "state.json").read_text())["step"] if last else 0
    if world.main:
        _trim_metrics(metrics, start)
    on_event(StageStarted(STAGE, total, start, ("LoRA" if not cfg.full else "full")
                          + f", {cfg.backend}"))

    def on_step(r: Any) -> None:
        row = {k: v for k, v in asdict(r).items() if v is not None}
        with open(metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        m = {"loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s,
             "peak_mem_mb": r.peak_mem_mb}
        if r.val_loss is not None:
            m["val_loss"] = r.val_loss
        on_event(Progress(STAGE, r.step, r.total, m))

    try:
        if cfg.backend == "mlx":
            from ..backends import mlx_train

            summary = mlx_train.train(folder, run.path, cfg, train_set, val_set,
                                      on_step=on_step, cancel=cancel)
        else:
            from ..backends import torch_train as tt

            summary = tt.train(folder, run.path, cfg, train_set, val_set, world=world,
                               on_step=on_step, cancel=cancel)
    except Cancelled:
        if world.main:
            run.set_stage(STAGE, "cancelled")
            on_event(StageFinished(STAGE, "cancelled"))
        raise
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() \
                or "malloc" in str(exc).lower():
            if world.main:
                run.set_stage(STAGE, "failed", error="out of memory")
            raise UserError(f"out of memory while training; lower --batch-size (now "
                            f"{cfg.batch_size}) or --max-seq-len (now {cfg.max_seq_len}), or "
                            "add --gradient-checkpointing; rerun to resume from the last "
                            "checkpoint") from None
        raise
    if world.main:
        summary["data"] = asdict(rep)
        run.set_stage(STAGE, "done", summary=summary)
        on_event(StageFinished(STAGE, "done", summary))
    if fuse_after and world.main:
        fuse(run.name, cfg, on_event=on_event, _run=run, _folder=folder)
    return summary


def _trim_metrics(path: Any, step: int) -> None:
    """Drop metric rows past the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    rows = [r for r in read_jsonl_repairing(path) if r.get("step", 0) <= step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def fuse(run_name: str, cfg: TrainConfig | None = None, *, on_event: OnEvent = ignore,
         _run: Run | None = None, _folder: Any = None) -> str:
    """Merge the trained adapter into the base weights: ``RUN/merged``."""
    run = _run or Run.load(run_name)
    own_lock = _run is None
    if own_lock:
        run.lock()
    try:
        saved = run.manifest.get("config", {}).get(STAGE)
        if not saved or run.stage_state(STAGE) != "done":
            raise UserError(f"run '{run.name}' has no finished training; run `ssd-local train "
                            f"{run.name}` first")
        if cfg is None:
            from .config import from_dict

            cfg = from_dict(TrainConfig, {**saved, "lr": saved.get("lr")})
        folder = _folder or models.ensure_hf_folder(_model_of(run, on_event), on_event)
        preset = run.manifest.get("config", {}).get("sample", {}).get("preset")
        d = cfg.eval_decoding(preset)
        on_event(StageStarted(FUSE, 1, 0, f"T_eval={d.temperature:g}"))
        run.set_stage(FUSE, "running")
        generation = {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p}
        if saved.get("backend", "torch") == "mlx":
            from ..backends import mlx_train

            out = mlx_train.fuse(folder, run.path, generation)
        else:
            from ..backends import torch_train as tt

            out = tt.fuse(folder, run.path, bool(saved.get("full")), generation)
        run.manifest["recommended_decoding"] = {"temperature": d.temperature,
                                                "top_k": d.top_k, "top_p": d.top_p}
        run.set_stage(FUSE, "done", path=str(out))
        for f in sorted(Path(out).glob("*.safetensors")):  # one file, or shards
            run.record_artefact(f"merged/{f.name}")
        on_event(StageFinished(FUSE, "done", {"path": str(out)}))
        return str(out)
    finally:
        if own_lock:
            run.unlock()
