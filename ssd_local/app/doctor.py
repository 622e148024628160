"""``ssd-local doctor``: what this machine has (hardware, memory, installed backends and
their versions), which backend each stage picks here, and what is missing for the best
backend on this machine. Facts only; the CLI renders them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata

from ..backends import (apple_silicon, auto_sampling_backend, auto_training_backend,
                        extra_of, installed_backends, probe)
from ..backends.registry import samplers
from .inventory import physical_memory_gb

PACKAGES = {"llamacpp": ["llama-cpp-python"], "torch": ["torch", "transformers", "peft"],
            "mlx": ["mlx", "mlx-lm"]}


@dataclass
class Diagnosis:
    rows: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    missing: list[str] = field(default_factory=list)  # what to install, one line each


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpu(installed: set[str]) -> tuple[str, bool]:
    """A line about the accelerator, and whether torch can use CUDA here."""
    if apple_silicon():
        metal = probe.mlx_metal()
        note = "" if metal is None else ", Metal available to mlx" if metal else \
            ", mlx is a CPU build"
        return f"Apple silicon ({platform.machine()}){note}", False
    cuda = probe.cuda()
    if cuda is not None:
        return (f"CUDA: {len(cuda.names)} x {cuda.names[0]} ({cuda.memory_gb:.0f} GiB each)",
                True)
    if "torch" in installed and probe.nvidia_present():
        return "an NVIDIA GPU is present, but this torch is a CPU build", False
    return "none found (CPU only)", False


def diagnose() -> Diagnosis:
    d = Diagnosis()
    installed = installed_backends()
    apple = apple_silicon()
    mem = physical_memory_gb()
    d.rows.append(("machine", f"{platform.system()} {platform.machine()}, "
                   f"{os.cpu_count() or '?'} CPU cores"
                   + (f", {mem:.1f} GiB memory" if mem else "")))
    d.rows.append(("python", platform.python_version()))
    gpu, cuda = _gpu(installed)
    d.rows.append(("accelerator", gpu))
    for name in samplers():
        versions = [f"{p} {v}" for p in PACKAGES[name] if (v := _version(p))]
        state = "installed" if name in installed else "not installed"
        state += f" ({', '.join(versions)})" if versions else ""
        if name == "mlx" and name in installed and not apple:
            state += "; runs on CPU here (correct, slow); fast on Apple silicon"
        d.rows.append((f"backend {name}", state))
    train = auto_training_backend(apple, installed)
    where = " on CUDA" if train == "torch" and cuda else " on CPU" if train == "torch" else ""
    hf, gguf = (auto_sampling_backend(k, apple, installed) for k in ("hf", "gguf"))
    d.rows.append(("chosen", f"sampling: HF folder -> {hf}, GGUF -> {gguf}; training -> "
                   f"{train}{where} (--backend overrides)"))
    best = ["mlx", "llamacpp"] if apple else ["torch", "llamacpp"]
    for name in best:
        if name not in installed:
            d.missing.append(f"{name}: pip install 'ssd-local[{extra_of(name)}]'")
    if gpu.startswith("an NVIDIA GPU"):
        d.missing.append("torch with CUDA: install a CUDA build of torch (see pytorch.org)")
    llama_builds(d, apple or cuda or probe.nvidia_present())
    return d


def llama_builds(d: Diagnosis, gpu_present: bool) -> None:
    """Whether the llama.cpp builds in use can offload (serving: xllamacpp's; sampling and
    quantizing: llama-cpp-python's), with a warning where a GPU is here but a build is
    CPU-only."""
    server, lcp = probe.server_gpus(), probe.llama_cpp_offload()
    if server is None:
        d.rows.append(("serving engine", "not installed (xllamacpp: llama.cpp's server)"))
        d.missing.append("serve: pip install 'ssd-local[llama]' (xllamacpp)")
    else:
        d.rows.append(("serving engine", f"xllamacpp {_version('xllamacpp')}: "
                       + (f"offloads to {', '.join(server)}" if server else "CPU-only build")))
    if lcp is not None:
        d.rows.append(("llama-cpp-python", "offloads to the GPU" if lcp else "CPU-only build"))
    if not gpu_present:
        return
    fix = ("the macOS arm64 wheel from PyPI is the Metal build" if apple_silicon() else
           "pip install xllamacpp --force-reinstall --index-url "
           "https://xorbitsai.github.io/xllamacpp/whl/cu128 (cu132 for CUDA 13.2 drivers)")
    if server == []:
        d.missing.append(f"WARNING: a GPU is here, but `serve` runs on CPU: xllamacpp is a "
                         f"CPU-only build; `make setup` picks the GPU build, or {fix}")
    if lcp is False:
        flag = "-DGGML_METAL=on" if apple_silicon() else "-DGGML_CUDA=on"
        d.missing.append(f"WARNING: a GPU is here, but llama-cpp-python (sampling GGUFs) is a "
                         f"CPU-only build; `make setup` builds it with {flag}, or "
                         f"CMAKE_ARGS=\"{flag}\" pip install --no-cache-dir --force-reinstall "
                         "llama-cpp-python")
