"""The memory estimate before a run exists: the distillation form's line. The shape of a
model the user typed comes from what is on this machine (an HF folder's config.json, a
GGUF's header or its converted folder, a hub id's cached config), the budget from the
machine's description; ``memory.plan`` does the rest, as the train stage will."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..backends.base import TrainDevice
from ..config import TrainConfig
from ..errors import UserError
from .memory import GiB, ModelDims, Workload, dims_from_config, plan, read_dims

if TYPE_CHECKING:
    from .inventory import Hardware

# A coding prompt with its chat template, as the form assumes before anything is sampled;
# the train stage measures the real examples.
PROMPT_TOKENS = 256


def dims_for(ref: str) -> ModelDims:
    """``model_dims(ref)``, remembered per reference (the form asks at every keystroke)."""
    from ..config.paths import home
    from .inventory import hf_cache_dir

    found = _dims_for(ref, str(home()), str(hf_cache_dir()))
    if isinstance(found, str):
        raise UserError(found)
    return found


@lru_cache(maxsize=64)
def _dims_for(ref: str, _home: str, _hf_cache: str) -> ModelDims | str:
    try:
        return model_dims(ref)
    except UserError as exc:
        return str(exc)


def model_dims(ref: str) -> ModelDims:
    """The shape of the model ``ref`` names, from what is on this machine: an HF folder's
    config.json, a GGUF's header (or its converted folder), a hub id's cached config.
    Raises ``UserError`` saying what is missing."""
    from . import models
    from .inventory import hf_cache_dir

    try:
        m = models.resolve(ref, download=False)
    except UserError:
        repo = ref.partition(":")[0]
        snaps = sorted((hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots")
                       .glob("*/config.json"), key=lambda p: p.stat().st_mtime)
        if not snaps or ":" in ref:
            raise UserError(f"the estimate needs the model: '{ref}' is not on this machine "
                            "yet (it is downloaded when the run starts)") from None
        return read_dims(snaps[-1].parent)
    if m.kind == "hf":
        return read_dims(m.path)
    converted = models.hf_cache_dir(m)
    if (converted / ".complete").exists():
        return read_dims(converted)
    from ..backends.gguf_shape import gguf_config

    return dims_from_config(gguf_config(m.path))


def form_device(hw: Hardware | None) -> TrainDevice:
    """A device for the form, from the machine's description (no engine is imported):
    its whole memory, since free memory is measured when training starts. Without a
    description yet: this machine's available RAM, as the torch CPU trainer sees it."""
    from ..backends.probe import available_ram

    if hw is None:
        return TrainDevice("torch", "cpu", available_ram() or 0, "available RAM", 4, 4)
    if hw.backend == "MLX":
        return TrainDevice("mlx", "metal", int((hw.memory_gb or 0) * GiB),
                           "unified memory (total)")
    if hw.backend == "torch (CUDA)":
        return TrainDevice("torch", "cuda", int((hw.accelerator_memory_gb or 0) * GiB),
                           "GPU memory (total)", 2, 2)
    return TrainDevice("torch", "cpu", int((hw.memory_gb or 0) * GiB), "RAM (total)", 4, 4)


def preview(ref: str, cfg: TrainConfig, max_new_tokens: int, device: TrainDevice) -> str:
    """One line for the distillation form: what training would choose for answers up to
    ``max_new_tokens`` (plus ``PROMPT_TOKENS`` of prompt, cut at --max-seq-len)."""
    try:
        dims = dims_for(ref)
    except UserError as exc:
        return f"memory: {exc}"
    tokens = min(cfg.max_seq_len, max_new_tokens + PROMPT_TOKENS)
    work = Workload((tokens,) * cfg.effective_batch,
                    (min(tokens, max_new_tokens),) * cfg.effective_batch)
    try:
        p = plan(dims, cfg, device, work)
    except UserError as exc:
        return f"memory ({dims.describe()}, examples up to {tokens} tokens): {exc}"
    return f"{p.note} ({dims.describe()}, examples up to {tokens} tokens)"
