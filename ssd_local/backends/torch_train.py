"""SSD fine-tuning with PyTorch: LoRA (peft) or full, one process or many under torchrun.

    ssd-local train RUN                                   # one process: CUDA bf16, or CPU fp32
    torchrun --nproc-per-node 2 -m ssd_local.cli train RUN          # DDP
    torchrun --nproc-per-node 8 -m ssd_local.cli train RUN --fsdp   # FSDP (model sharded)

The loss is cross-entropy over response tokens, normalised by the number of response
tokens in the whole optimizer step (all micro-batches, all processes), so gradient
accumulation and the number of processes do not change the update. The output layer is
applied only at response positions, in checkpointed chunks of a fixed number of logits
(``loss_chunk``), so the (tokens x vocabulary) logits never sit in memory at once.

Checkpoints hold the trainable weights, AdamW and scheduler state, the RNG state and the
step; a step's data depends only on its number, so a resumed run replays exactly what an
uninterrupted one would have seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import TrainConfig
from ..errors import Cancelled
from . import probe
from .base import IGNORE, Example, StepReport, TrainDevice, TrainOutcome, World
from .hf import HFTokenizer, quiet_transformers
from .train_common import (latest_checkpoint, loss_chunk, lr_at, peak_rss_mb, planned_steps,
                           release_freed_blocks, state_of, total_steps, write_checkpoint)


# -- processes ---------------------------------------------------------------------------------
def init_world() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return World(dist.get_rank(), dist.get_world_size(), local)


def all_sum(x: float, world: World, op: str = "sum") -> float:
    if world.size == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t.item())


def device_for(world: World) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank), torch.bfloat16
    return torch.device("cpu"), torch.float32


def train_device(world: World) -> TrainDevice:
    """This process's device, its precision and free memory: CUDA's free memory (after
    this process's context), else the available RAM shared by the launch's processes.
    Every process gets the smallest figure, so all of them plan the same batches."""
    device, dtype = device_for(world)
    if device.type == "cuda":
        free, name = probe.cuda_free(device.index or 0)
        kind, source, size = "cuda", f"free CUDA memory on {name}", 2
    else:
        free = (probe.available_ram() or 0) // world.size
        kind, size = "cpu", 4
        source = "available RAM" + (f" / {world.size} processes" if world.size > 1 else "")
    free = int(-all_sum(-float(free), world, op="max"))
    return TrainDevice("torch", kind, free, source, act_bytes=size, weight_bytes=size)


# -- the model ---------------------------------------------------------------------------------
class ResponseLoss(nn.Module):
    """Backbone + output layer at response positions only; returns the summed token loss.
    This is the module DDP/FSDP wrap, so gradient sync follows its forward."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = base.get_decoder()(input_ids=input_ids, position_ids=position_ids,
                                    use_cache=False).last_hidden_state
        target = labels[:, 1:]
        keep = target != IGNORE
        h = hidden[:, :-1][keep]
        y = target[keep]
        head = base.get_output_embeddings()
        total = hidden.new_zeros((), dtype=torch.float32)
        n = loss_chunk(head.weight.shape[0])
        for s in range(0, h.shape[0], n):
            total = total + checkpoint(_chunk_loss, head.weight, h[s:s + n], y[s:s + n],
                                       use_reentrant=False)
        return total


def _chunk_loss(weight: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = (h @ weight.t()).float()
    return nn.functional.cross_entropy(logits, y, reduction="sum")


def load_model(folder: Path, cfg: TrainConfig, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.config.use_cache = False
    torch.manual_seed(cfg.seed)  # the adapter's initialisation
    if not cfg.full:
        from peft import LoraConfig, get_peft_model

        targets: Any = cfg.lora_targets
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets, task_type="CAUSAL_LM"))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model, tok


def wrap(model: nn.Module, cfg: TrainConfig, world: World, device: torch.device) -> nn.Module:
    module = ResponseLoss(model).to(device)
    if world.size == 1:
        return module
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in base.get_decoder().layers:
            fully_shard(layer)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (rotary tables) are constants: no per-forward broadcast, so processes may run
    # different numbers of forwards between gradient syncs.
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                   else None, broadcast_buffers=False)


# -- batches -----------------------------------------------------------------------------------
def collate(rows: list[list[Example]], pad_id: int, device: torch.device) -> dict[str, Any]:
    """Rows of one or more examples each. Inside a row every example restarts its position
    ids at 0, which transformers turns into attention kept inside each example; padding is
    its own pseudo-example with no labels."""
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids, pos, labels = [], [], []
    for row in rows:
        r_ids, r_pos, r_lab = [], [], []
        for e in row:
            r_ids += e.input_ids
            r_lab += e.labels
            r_pos += list(range(len(e.input_ids)))
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        labels.append(r_lab + [IGNORE] * pad)
        pos.append(r_pos + list(range(pad)))
    t = {"input_ids": ids, "position_ids": pos, "labels": labels}
    out = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in t.items()}
    out["tokens"] = sum(len(e.input_ids) for row in rows for e in row)
    out["responses"] = sum(e.n_response for row in rows for e in row)
    return out


def _autocast(device: torch.device) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else contextlib.nullcontext()


def _filler(pad_id: int, device: torch.device) -> dict[str, Any]:
    """A one-token pass for a process with less work than the others (its loss is
    discarded); FSDP needs every process to run the same number of forwards."""
    return collate([[Example([pad_id, pad_id], [IGNORE, pad_id])]], pad_id, device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


# -- checkpoints -------------------------------------------------------------------------------
def _state_options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**{"full_state_dict": True, "cpu_offload": True,
                               "ignore_frozen_params": True, **kw})


def save_checkpoint(ckpt_root: Path, step: int, module: nn.Module, optim: Any,
                    world: World, keep: int, extra: dict[str, Any]) -> Path | None:
    """All processes gather the state; the main one writes ``step-N.tmp`` and renames it.
    A failed save (disk full) leaves the previous checkpoint as it was."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(module, optim, options=_state_options())
    if not world.main:
        return None

    def write(tmp: Path) -> None:
        torch.save({"model": msd, "optim": osd, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                    else None}, tmp / "trainer.pt")

    return write_checkpoint(ckpt_root, step, keep, extra, write)


def load_checkpoint(path: Path, module: nn.Module, optim: Any) -> int:
    from torch.distributed.checkpoint.state_dict import set_state_dict

    blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    set_state_dict(module, optim, model_state_dict=blob["model"],
                   optim_state_dict=blob["optim"], options=_state_options(strict=False))
    torch.set_rng_state(blob["rng"])
    if blob.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return int(json.loads((path / "state.json").read_text())["step"])


# -- the loop ----------------------------------------------------------------------------------
def train(folder: Path, out_dir: Path, cfg: TrainConfig, train_set: list[Example],
          val_set: list[Example], *, world: World, on_step: Callable[[StepReport], None],
          cancel: threading.Event | None = None) -> TrainOutcome:
    """Train and write ``out_dir/checkpoints/`` and the final ``out_dir/adapter`` (LoRA) or
    ``out_dir/trained`` (full)."""
    device, dtype = device_for(world)
    if device.type == "cpu" and cfg.compact_memory:  # the memory plan's choice
        release_freed_blocks()
    model, tok = load_model(folder, cfg, dtype)
    module = wrap(model, cfg, world, device)
    params = [p for p in module.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.peak_lr, betas=(0.9, 0.95),
                              weight_decay=cfg.weight_decay)
    ckpt_root = out_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    start = 0
    if (last := latest_checkpoint(ckpt_root)) is not None:
        start = load_checkpoint(last, module, optim)
    total, per_epoch = total_steps(len(train_set), cfg)
    lengths = [len(e.input_ids) for e in train_set]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    last_loss, last_val = float("nan"), None
    t0, tokens_seen = time.monotonic(), 0
    module.train()
    done = start
    for step, epoch, micro in planned_steps(lengths, cfg, start, total, per_epoch):
        batches = [collate([[train_set[i] for i in row] for row in mb], pad_id, device)
                   for mb in micro[world.rank::world.size]]
        n_resp = all_sum(float(sum(b["responses"] for b in batches)), world)
        lr = lr_at(step, total, cfg)
        for g in optim.param_groups:
            g["lr"] = lr
        loss_sum = _accumulate(module, batches, n_resp, world, device, pad_id)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        last_loss = all_sum(loss_sum, world) / max(n_resp, 1.0)
        tokens_seen += int(all_sum(float(sum(b["tokens"] for b in batches)), world))
        done = step + 1
        val_now = bool(val_set) and (done % cfg.eval_every == 0 or done == total)
        if val_now:
            last_val = evaluate(module, val_set, cfg, pad_id, world, device)
        if world.main:  # metrics first: a kill before the checkpoint trims them on resume
            on_step(StepReport(done, total, last_loss, lr,
                               tokens_seen / max(time.monotonic() - t0, 1e-9),
                               peak_memory_mb(device), last_val if val_now else None))
        # every process stops at the same step (Ctrl-C reaches them at different times)
        stopping = all_sum(float(cancel is not None and cancel.is_set()), world, op="max")
        if done % cfg.save_every == 0 or done == total or stopping:
            save_checkpoint(ckpt_root, done, module, optim, world, cfg.keep_checkpoints,
                            {"epoch": epoch, "loss": last_loss, "val_loss": last_val,
                             "backend": "torch"})
            if world.size > 1:
                dist.barrier()
        if stopping:
            break
    if done < total:
        raise Cancelled(f"training stopped at step {done} of {total}")
    if start == total and last is not None:  # nothing left to run: the checkpoint's figures
        state = state_of(last)
        last_loss, last_val = state.get("loss", last_loss), state.get("val_loss")
    export_trained(module, model, tok, out_dir, cfg, world)
    return TrainOutcome(total, last_loss, last_val, tokens_seen)


def _accumulate(module: nn.Module, batches: list[dict[str, Any]], n_resp: float, world: World,
                device: torch.device, pad_id: int) -> float:
    """Forward/backward over this process's micro-batches; gradients sync on the last.
    Every process runs the same number of passes (FSDP gathers weights in each): one with
    fewer micro-batches adds passes whose loss is multiplied by zero."""
    loss_sum = 0.0
    scale = world.size / max(n_resp, 1.0)  # DDP/FSDP average over processes
    passes = int(all_sum(float(len(batches)), world, op="max"))
    for j in range(passes):
        b, weight = (batches[j], scale) if j < len(batches) else (_filler(pad_id, device), 0.0)
        sync = j == passes - 1 or not hasattr(module, "no_sync")
        ctx = contextlib.nullcontext() if sync else module.no_sync()
        with ctx, _autocast(device):
            loss = module(b["input_ids"], b["position_ids"], b["labels"])
            (loss * weight).backward()
        if weight:
            loss_sum += float(loss.detach())
    return loss_sum


@torch.no_grad()
def evaluate(module: nn.Module, val_set: list[Example], cfg: TrainConfig, pad_id: int,
             world: World, device: torch.device) -> float:
    """Mean response-token loss on the held-out examples (same pass count everywhere)."""
    module.eval()
    total, n = 0.0, 0.0
    mine = list(range(len(val_set)))[world.rank::world.size]
    chunks = [mine[s:s + cfg.batch_size] for s in range(0, len(mine), cfg.batch_size)]
    passes = int(all_sum(float(len(chunks)), world, op="max"))
    for j in range(passes):
        b = collate([[val_set[i]] for i in chunks[j]], pad_id, device) if j < len(chunks) \
            else _filler(pad_id, device)
        with _autocast(device):
            loss = float(module(b["input_ids"], b["position_ids"], b["labels"]))
        if j < len(chunks):
            total += loss
            n += b["responses"]
    module.train()
    return all_sum(total, world) / max(all_sum(n, world), 1.0)


def export_trained(module: nn.Module, model: nn.Module, tok: Any, out_dir: Path,
                   cfg: TrainConfig, world: World) -> None:
    """The final weights as a standard artefact: a peft adapter folder, or a full model."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(module, options=_state_options(ignore_frozen_params=not cfg.full))
    if not world.main:
        return
    sd = {k.removeprefix("module.").removeprefix("lm."): v for k, v in sd.items()}
    name = "trained" if cfg.full else "adapter"
    tmp, final = out_dir / f".{name}.tmp", out_dir / name
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
    if cfg.full:
        tok.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


# -- fuse --------------------------------------------------------------------------------------
def fuse(base_folder: Path, out_dir: Path, full: bool, generation: dict[str, Any]) -> Path:
    """Merge the adapter into the base weights and save ``out_dir/merged`` (safetensors,
    tokenizer with its chat template, and a generation_config holding T_eval)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    quiet_transformers()
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if full:
        model = AutoModelForCausalLM.from_pretrained(str(out_dir / "trained"), dtype=dtype)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(out_dir / "adapter")).merge_and_unload()
    tok = AutoTokenizer.from_pretrained(str(base_folder))
    model.config.use_cache = True
    eos = model.generation_config.eos_token_id if model.generation_config else None
    model.generation_config = GenerationConfig(
        do_sample=True, eos_token_id=eos if eos is not None else tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, **generation)
    tmp, final = out_dir / ".merged.tmp", out_dir / "merged"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


class TorchTrainer:
    """The torch backend as the core's ``Trainer``: one process, or one of several under
    torchrun (the world is read from the launcher's environment)."""

    name = "torch"

    def __init__(self) -> None:
        self.world = init_world()

    def tokenizer(self, folder: Path) -> HFTokenizer:
        return HFTokenizer(folder)

    def device(self) -> TrainDevice:
        return train_device(self.world)

    def train(self, folder: Path, out_dir: Path, cfg: TrainConfig, train_set: list[Example],
              val_set: list[Example], *, on_step: Callable[[StepReport], None],
              cancel: threading.Event | None = None) -> TrainOutcome:
        return train(folder, out_dir, cfg, train_set, val_set, world=self.world,
                     on_step=on_step, cancel=cancel)

    def fuse(self, base_folder: Path, out_dir: Path, generation: dict[str, Any], *,
             full: bool) -> Path:
        return fuse(base_folder, out_dir, full, generation)
