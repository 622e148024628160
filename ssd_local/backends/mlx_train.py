"""SSD fine-tuning with MLX: LoRA through mlx-lm's tuner, or QLoRA when the model is a
quantized (mlx-community) folder. Apple silicon runs it on Metal; MLX's CPU build runs the
same code on Linux (slowly, which is what the tests use).

    ssd-local train RUN --backend mlx

The loop is mlx-lm's own ``tuner.trainer.train`` (its compiled step and gradient
accumulation); ssd-local supplies what must match the torch backend:
- the batches: ``trainset.plan_epoch``, the same examples per step as torch. mlx-lm
  accumulates a fixed number of micro-batches per update, so a short last step is topped
  up with empty micro-batches that carry no loss;
- the loss: cross-entropy on response tokens only (same chat-template rebuild and masking
  as torch), normalised by the response tokens of the whole optimizer step;
- AdamW with torch's bias correction, betas (0.9, 0.95), weight decay and gradient-norm
  clipping at 1.0; the learning rate is ``lr_at`` of the step, set before each step;
- progress: a ``TrainingCallback`` called after every optimizer step reports metrics,
  runs validation, writes checkpoints and honours Ctrl-C. mlx-lm's own progress display
  is switched off while it runs (ssd-local's UI owns the screen).

Checkpoints (``RUN/checkpoints/step-N/``) hold the adapter, the AdamW state (moments and
step; mlx-lm itself saves only the adapter) and ``state.json``. LoRA dropout draws from a
key reseeded from (seed, step) before every step, so a resumed run needs no RNG state and
replays what an uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from ..config import TrainConfig
from ..errors import Cancelled, UserError
from . import probe
from .base import IGNORE, Example, StepReport, TrainDevice, TrainOutcome, World
from .hf import HFTokenizer
from .mlx import load
from .train_common import (latest_checkpoint, lr_at, peak_rss_mb, planned_steps, state_of,
                           total_steps, write_checkpoint)

PAD_TO = 32  # widths are padded to 1 + a multiple of this: fewer shapes to compile


# -- the model ---------------------------------------------------------------------------------
def lora_keys(model: nn.Module, targets: str) -> list[str]:
    """Paths inside a transformer block of the linear layers that get adapters."""
    names = None if targets == "all-linear" else {t.strip() for t in targets.split(",")}
    keys = [k for k, m in model.layers[0].named_modules()
            if isinstance(m, (nn.Linear, nn.QuantizedLinear))
            and (names is None or k.split(".")[-1] in names)]
    if not keys:
        raise UserError(f"no linear layer matches --lora-targets {targets}; use all-linear or "
                        "names such as q_proj,v_proj")
    return keys


def adapter_config(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """mlx-lm's adapter_config.json (``mlx_lm.generate --adapter-path`` reads it too).
    peft's LoRA scale is alpha / r; mlx-lm takes the scale itself."""
    return {"fine_tune_type": "lora", "num_layers": len(model.layers),
            "lora_parameters": {"rank": cfg.lora_rank, "scale": cfg.lora_alpha / cfg.lora_rank,
                                "dropout": cfg.lora_dropout,
                                "keys": lora_keys(model, cfg.lora_targets)}}


def load_model(folder: Path, cfg: TrainConfig) -> tuple[nn.Module, Any, dict[str, Any]]:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if cfg.full:
        raise UserError("--full is only on the torch backend for now; use --backend torch, "
                        "or LoRA with --backend mlx")
    model, wrapper = load(folder)
    model.freeze()
    mx.random.seed(cfg.seed)  # the adapter's initialisation
    acfg = adapter_config(model, cfg)
    linear_to_lora_layers(model, acfg["num_layers"], acfg["lora_parameters"])
    return model, wrapper, acfg


# Architectures whose output is exactly backbone -> output layer (tied or not): for these
# the output layer runs at response positions only, so the (tokens x vocabulary) logits of
# the prompt are never computed. Others get full logits (correct, just slower).
_HEAD_ONLY_AT_RESPONSES = {"mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3"}


def _output_layer(model: nn.Module) -> Callable[[mx.array], mx.array]:
    return model.lm_head if "lm_head" in model else model.model.embed_tokens.as_linear


def response_loss(model: nn.Module, ids: mx.array, labels: mx.array, pos: mx.array,
                  targets: mx.array, weight: mx.array) -> tuple[mx.array, mx.array]:
    """Summed cross-entropy over response tokens, times ``weight`` (accumulation steps /
    response tokens of the whole optimizer step); also returns the response token count.
    ``pos``/``targets``: each row's response positions and their next tokens (-100 pads)."""
    if type(model).__module__ in _HEAD_ONLY_AT_RESPONSES:
        hidden = model.model(ids[:, :-1])
        hidden = mx.take_along_axis(hidden, pos[..., None], axis=1)
        logits = _output_layer(model)(hidden)
    else:
        logits, targets = model(ids[:, :-1]), labels[:, 1:]
    mask = targets != IGNORE
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), mx.where(mask, targets, 0)) * mask
    return ce.sum() * weight, mask.sum()


class ClippedAdamW(optim.AdamW):
    """AdamW as torch computes it (bias correction on) after clipping the gradient norm
    at 1.0, as the torch backend does."""

    def update(self, model: nn.Module, gradients: dict) -> None:
        gradients, _ = optim.clip_grad_norm(gradients, 1.0)
        super().update(model, gradients)


def step_seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:4], "little")


# -- batches -----------------------------------------------------------------------------------
def _padded(n: int) -> int:
    return PAD_TO * -(-max(n, 1) // PAD_TO)


def collate(examples: list[Example], pad_id: int) -> tuple[mx.array, ...]:
    """One example per row, right-padded: ids, labels (-100 on padding), and each row's
    response positions with the tokens they predict (padded with -100)."""
    width = 1 + _padded(max(len(e.input_ids) for e in examples) - 1)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in examples]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
    where = [[i for i, y in enumerate(row[1:]) if y != IGNORE] for row in labels]
    n = _padded(max(len(w) for w in where))
    pos = [w + [0] * (n - len(w)) for w in where]
    tgt = [[row[i + 1] for i in w] + [IGNORE] * (n - len(w)) for w, row in zip(where, labels)]
    return tuple(mx.array(x, dtype=mx.int32) for x in (ids, labels, pos, tgt))


def _filler(pad_id: int) -> tuple[mx.array, ...]:
    """The smallest micro-batch, with no loss: tops up a short step."""
    return tuple(mx.array(x, dtype=mx.int32) for x in
                 ([[pad_id, pad_id]], [[IGNORE, IGNORE]], [[0]], [[IGNORE]]))


def step_batches(train_set: list[Example], cfg: TrainConfig, start: int, total: int,
                 per_epoch: int, accum: int, pad_id: int, tokens: dict[int, int]
                 ) -> Iterator[tuple[mx.array, ...]]:
    """Micro-batches of steps ``start..total-1``, exactly ``accum`` per step."""
    lengths = [len(e.input_ids) for e in train_set]
    filler = _filler(pad_id)
    for step, _, micro in planned_steps(lengths, cfg, start, total, per_epoch):
        groups = [[train_set[i] for row in mb for i in row] for mb in micro]
        n_resp = sum(e.n_response for g in groups for e in g)
        tokens[step + 1] = sum(len(e.input_ids) for g in groups for e in g)
        weight = mx.array(accum / max(n_resp, 1), dtype=mx.float32)
        for g in groups:
            yield (*collate(g, pad_id), weight)
        for _ in range(accum - len(groups)):
            yield (*filler, mx.array(0.0, dtype=mx.float32))


def evaluate(model: nn.Module, val_set: list[Example], cfg: TrainConfig, pad_id: int) -> float:
    """Mean response-token loss on the held-out examples (dropout off)."""
    model.eval()
    total, n = 0.0, 0
    one = mx.array(1.0, dtype=mx.float32)
    for s in range(0, len(val_set), cfg.batch_size):
        loss, k = response_loss(model, *collate(val_set[s:s + cfg.batch_size], pad_id), one)
        mx.eval(loss, k)
        total, n = total + loss.item(), n + int(k.item())
    model.train()
    return total / max(n, 1)


def peak_memory_mb() -> float:
    if mx.metal.is_available():
        return mx.get_peak_memory() / 2**20
    return peak_rss_mb()


# -- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: optim.Optimizer,
                    keep: int, extra: dict[str, Any]) -> Path:
    def write(tmp: Path) -> None:
        mx.save_safetensors(str(tmp / "adapters.safetensors"),
                            dict(tree_flatten(model.trainable_parameters())))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"),
                            dict(tree_flatten(optimizer.state)))

    return write_checkpoint(root, step, keep, {"backend": "mlx", **extra}, write)


def load_checkpoint(path: Path, model: nn.Module, optimizer: optim.Optimizer) -> int:
    model.load_weights(list(mx.load(str(path / "adapters.safetensors")).items()), strict=False)
    optimizer.init(model.trainable_parameters())
    optimizer.state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
    return int(state_of(path)["step"])


# -- the loop ----------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised from the callback to leave mlx-lm's loop at a step boundary."""


@contextlib.contextmanager
def _quiet_trainer_ui() -> Iterator[None]:
    """mlx-lm's train() draws its own rich progress; build it as a non-main rank's UI (which
    draws nothing) while our loop runs."""
    from mlx_lm.tuner import trainer

    original = trainer.TrainUI
    trainer.TrainUI = lambda total, rank=0: original(total, rank=1)  # type: ignore[misc]
    try:
        yield
    finally:
        trainer.TrainUI = original


def train(folder: Path, out_dir: Path, cfg: TrainConfig, train_set: list[Example],
          val_set: list[Example], *, on_step: Callable[[StepReport], None],
          cancel: threading.Event | None = None) -> TrainOutcome:
    """Train and write ``out_dir/checkpoints/`` and ``out_dir/adapter`` (mlx-lm's adapter
    format)."""
    from mlx_lm.tuner.callbacks import TrainingCallback

    if cfg.batching == "pack":
        raise UserError("--batching pack needs per-example position ids, which mlx-lm models "
                        "do not take; use --batching group with --backend mlx")
    model, wrapper, acfg = load_model(folder, cfg)
    tok = wrapper._tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    total, per_epoch = total_steps(len(train_set), cfg)
    optimizer = ClippedAdamW(learning_rate=lr_at(0, total, cfg), betas=[0.9, 0.95],
                             eps=1e-8, weight_decay=cfg.weight_decay, bias_correction=True)
    ckpt_root = out_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    start, last = 0, latest_checkpoint(ckpt_root)
    if last is not None:
        start = load_checkpoint(last, model, optimizer)
    optimizer.learning_rate = lr_at(start, total, cfg)  # the next step's; then per step
    accum = -(-cfg.effective_batch // cfg.batch_size)
    tokens: dict[int, int] = {}
    report = {"loss": float("nan"), "val": None, "done": start, "tokens": 0,
              "trained": 0.0, "train_s": 0.0}
    t0 = time.monotonic()

    class Steps(TrainingCallback):
        def on_train_loss_report(self, info: dict) -> None:
            done = start + info["iteration"] // accum
            loss = float(info["train_loss"])
            window = info["trained_tokens"] - report["trained"]
            report["trained"] = info["trained_tokens"]
            report["train_s"] += window / info["tokens_per_second"] \
                if info["tokens_per_second"] > 0 else 0.0
            report["tokens"] += tokens.pop(done, 0)
            val_now = bool(val_set) and (done % cfg.eval_every == 0 or done == total)
            if val_now:
                report["val"] = evaluate(model, val_set, cfg, pad_id)
            report["loss"], report["done"] = loss, done
            on_step(StepReport(done, total, loss, lr_at(done - 1, total, cfg),
                               report["tokens"] / max(time.monotonic() - t0, 1e-9),
                               peak_memory_mb(), report["val"] if val_now else None,
                               report["trained"] / max(report["train_s"], 1e-9)))
            mx.random.seed(step_seed(cfg.seed, done))  # the next step's dropout
            optimizer.learning_rate = lr_at(done, total, cfg)  # and its learning rate
            stopping = cancel is not None and cancel.is_set()
            if done % cfg.save_every == 0 or done == total or stopping:
                save_checkpoint(ckpt_root, done, model, optimizer, cfg.keep_checkpoints,
                                {"epoch": (done - 1) // per_epoch, "loss": loss,
                                 "val_loss": report["val"]})
            if stopping and done < total:
                raise _Stop

    iters = (total - start) * accum
    scratch = out_dir / ".adapter.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if iters:
        mx.random.seed(step_seed(cfg.seed, start))
        batches = step_batches(train_set, cfg, start, total, per_epoch, accum, pad_id, tokens)
        try:
            _run_mlx_lm(model, optimizer, cfg, train_set, batches, iters, accum, scratch,
                        Steps())
        except _Stop:
            raise Cancelled(f"training stopped at step {report['done']} of {total}") from None
    elif last is not None:  # nothing left to run: the checkpoint's figures
        state = state_of(last)
        report["loss"], report["val"] = state.get("loss", report["loss"]), state.get("val_loss")
    export_adapter(model, acfg, scratch, out_dir / "adapter")
    return TrainOutcome(total, report["loss"], report["val"], report["tokens"])


def _run_mlx_lm(model: nn.Module, optimizer: optim.Optimizer, cfg: TrainConfig,
                train_set: list[Example], batches: Iterator[tuple[mx.array, ...]], iters: int,
                accum: int, scratch: Path, callback: Any) -> None:
    """mlx-lm's own training loop over our batches, with its progress display off."""
    from mlx_lm.tuner.trainer import TrainingArgs, train as mlx_lm_train

    args = TrainingArgs(batch_size=cfg.batch_size, iters=iters, steps_per_report=accum,
                        steps_per_eval=iters + 1, steps_per_save=iters + 1,
                        max_seq_length=cfg.max_seq_len + PAD_TO,
                        adapter_file=str(scratch / "adapters.safetensors"),
                        grad_checkpoint=cfg.gradient_checkpointing,
                        grad_accumulation_steps=accum)
    with _quiet_trainer_ui():
        mlx_lm_train(model=model, optimizer=optimizer, train_dataset=train_set,
                     val_dataset=None, args=args, loss=response_loss,
                     iterate_batches=lambda **_: batches, training_callback=callback)


def export_adapter(model: nn.Module, acfg: dict[str, Any], tmp: Path, final: Path) -> None:
    mx.save_safetensors(str(tmp / "adapters.safetensors"),
                        dict(tree_flatten(model.trainable_parameters())))
    (tmp / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


# -- fuse --------------------------------------------------------------------------------------
def _safetensors_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            names.update(k for k in json.loads(fh.read(n)) if k != "__metadata__")
    return names


def fuse(base_folder: Path, out_dir: Path, generation: dict[str, Any]) -> Path:
    """Merge the adapter into the base weights, dequantizing a quantized base, and save
    ``out_dir/merged`` as a standard transformers folder: safetensors under the model's
    own tensor names, its config without quantization, the tokenizer with its chat
    template, and a generation_config holding T_eval."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import dequantize_model, make_shards
    from transformers import GenerationConfig

    adapter = out_dir / "adapter"
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    model, wrapper = load(base_folder)
    model.freeze()
    linear_to_lora_layers(model, acfg["num_layers"], acfg["lora_parameters"])
    model.load_weights(list(mx.load(str(adapter / "adapters.safetensors")).items()),
                       strict=False)
    fused = [(n, m.fuse(dequantize=True)) for n, m in model.named_modules()
             if hasattr(m, "fuse")]
    model.update_modules(tree_unflatten(fused))
    model = dequantize_model(model)
    weights = dict(tree_flatten(model.parameters()))
    unknown = sorted(set(weights) - _safetensors_names(base_folder))
    if unknown:
        raise UserError(f"mlx-lm names some tensors of this architecture its own way (e.g. "
                        f"{unknown[0]}), so its fused weights would not be a standard "
                        "transformers folder; fuse with `ssd-local train RUN --backend torch`")
    tmp, final = out_dir / ".merged.tmp", out_dir / "merged"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = make_shards(weights)
    index: dict[str, str] = {}
    for i, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else \
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(tmp / name), shard, metadata={"format": "pt"})
        index.update({k: name for k in shard})
    if len(shards) > 1:
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
             "weight_map": dict(sorted(index.items()))}, indent=2))
    config = json.loads((base_folder / "config.json").read_text())
    for key in ("quantization", "quantization_config"):
        config.pop(key, None)
    dtype = str(next(iter(weights.values())).dtype).removeprefix("mlx.core.")
    for key in [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]:
        config[key] = dtype
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok = wrapper._tokenizer
    tok.save_pretrained(str(tmp))
    GenerationConfig(do_sample=True, eos_token_id=config.get("eos_token_id", tok.eos_token_id),
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                     **generation).save_pretrained(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


class MlxTrainer:
    """The mlx backend as the core's ``Trainer`` (always one process)."""

    name = "mlx"

    def __init__(self) -> None:
        self.world = World()

    def tokenizer(self, folder: Path) -> HFTokenizer:
        return HFTokenizer(folder)

    def device(self) -> TrainDevice:
        """Metal: MLX's recommended working set, or the available RAM when that is less
        (unified memory is shared with everything else); the CPU build: available RAM. MLX
        computes in the weights' own dtype."""
        ram = probe.available_ram()
        working = probe.mlx_working_set()
        if working is not None:
            if ram is not None and ram < working:
                return TrainDevice("mlx", "metal", ram, "available unified memory")
            return TrainDevice("mlx", "metal", working, "MLX's recommended working set")
        return TrainDevice("mlx", "cpu", ram or 0, "available RAM")

    def train(self, folder: Path, out_dir: Path, cfg: TrainConfig, train_set: list[Example],
              val_set: list[Example], *, on_step: Callable[[StepReport], None],
              cancel: threading.Event | None = None) -> TrainOutcome:
        return train(folder, out_dir, cfg, train_set, val_set, on_step=on_step, cancel=cancel)

    def fuse(self, base_folder: Path, out_dir: Path, generation: dict[str, Any], *,
             full: bool) -> Path:
        return fuse(base_folder, out_dir, generation)
