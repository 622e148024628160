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


# -- memory free for training (the memory plan, app/memory.py) --------------------------------
def available_ram() -> int | None:
    """Bytes of RAM a new allocation can get without swapping: Linux's MemAvailable,
    macOS's free + inactive + speculative + purgeable pages (``vm_stat``), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if shutil.which("vm_stat") is None:
        return None
    import re
    import subprocess

    try:
        out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    page = re.search(r"page size of (\d+) bytes", out)
    counts = {k.strip(): int(v) for k, v in re.findall(r"^Pages ([^:]+):\s+(\d+)\.", out, re.M)}
    kept = ("free", "inactive", "speculative", "purgeable")
    if not page or not any(k in counts for k in kept):
        return None
    return int(page.group(1)) * sum(counts.get(k, 0) for k in kept)


def cuda_free(index: int) -> tuple[int, str]:
    """Free memory of CUDA device ``index`` (after this process's own context) and its name."""
    import torch

    free, _ = torch.cuda.mem_get_info(index)
    return int(free), torch.cuda.get_device_name(index)


def mlx_working_set() -> int | None:
    """What MLX may use on Metal: the recommended working set less what it holds already
    (None without Metal)."""
    if not mlx_metal():
        return None
    import mlx.core as mx

    info = (getattr(mx, "device_info", None) or mx.metal.device_info)()
    return int(info["max_recommended_working_set_size"]) - int(mx.get_active_memory())


# -- what the llama.cpp builds in use can offload (``doctor``) -----------------------------------
def llama_cpp_offload() -> bool | None:
    """Whether llama-cpp-python's build can offload layers to a GPU (None: not installed)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def server_gpus() -> list[str] | None:
    """The GPUs the serving engine's build (xllamacpp) sees; [] for a CPU-only build, None
    when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        return None
    from .llama_server import gpus

    return [f"{d['name']} ({d['description']})" for d in gpus()]
