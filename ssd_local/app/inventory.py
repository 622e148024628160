"""What this machine offers: the hardware and engine a run would use, and the models that
can be distilled or served. Read by the TUI's home screen; no UI imports here.

Detection is cheap by default: nothing heavy is imported unless ``probe_cuda`` is set,
which imports torch (seconds), so a UI calls it from a worker."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from . import models
from ..config.paths import home
from .runs import Run, list_runs


@dataclass(frozen=True)
class Hardware:
    system: str  # e.g. "Linux x86_64"
    cpu_cores: int
    memory_gb: float | None  # physical memory
    accelerator: str  # "Apple silicon", "CUDA: <device name>", "CPU"
    backend: str  # the engine stack training would use: "MLX", "torch (CUDA)", "torch (CPU)"
    accelerator_memory_gb: float | None = None

    def describe(self) -> str:
        mem = f", {self.memory_gb:.0f} GB RAM" if self.memory_gb else ""
        acc = (f" ({self.accelerator_memory_gb:.0f} GB)" if self.accelerator_memory_gb
               else "")
        return (f"{self.accelerator}{acc} - {self.backend}\n{self.system}, "
                f"{self.cpu_cores} cores{mem}")


def physical_memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def detect_hardware(probe_cuda: bool = True) -> Hardware:
    """Apple silicon runs MLX when it is installed; elsewhere torch decides between CUDA
    and CPU. llama.cpp samples and serves GGUFs on all of them."""
    from ..backends import apple_silicon, is_available, probe

    system = f"{platform.system()} {platform.machine()}"
    cores, mem = os.cpu_count() or 1, physical_memory_gb()
    if apple_silicon():
        backend = "MLX" if is_available("mlx") else "torch (MPS)"
        return Hardware(system, cores, mem, "Apple silicon", backend, mem)
    cuda = probe.cuda() if probe_cuda else None
    if cuda is not None:
        n = len(cuda.names)
        name = cuda.names[0] + (f" x{n}" if n > 1 else "")
        return Hardware(system, cores, mem, f"CUDA: {name}", "torch (CUDA)", cuda.memory_gb)
    return Hardware(system, cores, mem, "CPU", "torch (CPU)" if is_available("torch")
                    else "llama.cpp only")


@dataclass(frozen=True)
class ModelEntry:
    ref: str  # what to pass as MODEL (to distill, sample, serve)
    kind: str  # "gguf" | "hf"
    source: str  # "embedded" | "hf cache" | "local" | "run"
    detail: str = ""


def _size(path: Path) -> str:
    n = path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{n / 2**20:.0f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def hf_cache_dir() -> Path:
    """Read at call time (huggingface-hub reads its environment once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def hf_cache_models(cache: Path | None = None) -> list[ModelEntry]:
    """Model repos in the HF cache: a transformers folder (``config.json``) as the repo id,
    each GGUF file as ``repo:file.gguf``."""
    out: list[ModelEntry] = []
    root = cache or hf_cache_dir()
    for repo_dir in sorted(root.glob("models--*")) if root.exists() else []:
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        snaps = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
        if not snaps:
            continue
        snap = snaps[-1]
        if (snap / "config.json").exists():
            out.append(ModelEntry(repo, "hf", "hf cache", _size(snap)))
        for g in sorted(snap.rglob("*.gguf")):
            out.append(ModelEntry(f"{repo}:{g.relative_to(snap)}", "gguf", "hf cache",
                                  _size(g)))
    return out


def list_models(search_dirs: tuple[Path, ...] | None = None) -> list[ModelEntry]:
    """Everything a run can start from or serve: the embedded default, the HF cache, GGUF
    files in ``search_dirs`` (default: ``./``, ``./models`` and ``$SSD_LOCAL_HOME/models``),
    and runs (their merged folder and GGUFs)."""
    from .export import run_ggufs

    out: list[ModelEntry] = []
    for name, (_, fname) in models.EMBEDDED.items():
        p = models.embedded_path(name)
        if p is not None:
            out.append(ModelEntry(name, "gguf", "embedded", f"{fname}, {_size(p)}"))
    out += hf_cache_models()
    dirs = search_dirs if search_dirs is not None else (
        Path.cwd(), Path.cwd() / "models", home() / "models")
    seen: set[Path] = set()
    for d in dirs:
        for g in sorted(d.glob("*.gguf")) if d.is_dir() else []:
            if g.resolve() not in seen:
                seen.add(g.resolve())
                out.append(ModelEntry(str(g), "gguf", "local", _size(g)))
    for r in list_runs():
        run = Run.load(r.name)
        if r.stages.get("fuse") == "done" and (run.path / "merged" / "config.json").exists():
            out.append(ModelEntry(str(run.path / "merged"), "hf", "run",
                                  f"{r.name}: tuned {r.model}"))
        for q, g in sorted(run_ggufs(run).items()):
            out.append(ModelEntry(str(g), "gguf", "run", f"{r.name}: {q}, {_size(g)}"))
    return out
