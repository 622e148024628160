"""Facts about the accelerators that only the engine libraries can tell (CUDA devices,
Metal for MLX). Each probe imports its library, so callers run them off the UI thread."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from . import is_available


@dataclass(frozen=True)
class Cuda:
    names: tuple[str, ...]
    memory_gb: float  # of the first device


def cuda() -> Cuda | None:
    """CUDA devices torch can use, or None."""
    if not is_available("torch"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Cuda(names, torch.cuda.get_device_properties(0).total_memory / 2**30)


def nvidia_present() -> bool:
    """An NVIDIA driver is installed (whatever torch can do with it)."""
    return shutil.which("nvidia-smi") is not None


def mlx_metal() -> bool | None:
    """Whether mlx runs on Metal here (None: mlx is not installed)."""
    if not is_available("mlx"):
        return None
    import mlx.core as mx

    return bool(mx.metal.is_available())
