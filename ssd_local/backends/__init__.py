"""Engines: the only layer that imports an engine library (torch, transformers, peft,
llama_cpp, mlx, the GGUF converter, the HTTP server). Each module imports its library
inside functions, so importing this package is cheap and a machine without one stack never
loads it. ``registry`` maps each backend name to its factory.

Which engine runs when the user names none (``--backend`` always wins):

| machine                       | sampling an HF folder | sampling a GGUF         | training |
|-------------------------------|-----------------------|-------------------------|----------|
| macOS on Apple silicon + mlx  | mlx                   | mlx (converted once)    | mlx      |
| anything else (CUDA or CPU)   | torch                 | llamacpp                | torch    |

CUDA does not change the choice (torch picks CUDA itself when it is there), so the choice
never needs to import torch."""

from __future__ import annotations

import importlib.util
import platform

from ..errors import UserError
from .registry import samplers, trainers


def is_available(name: str) -> bool:
    entry = samplers().get(name) or trainers().get(name)
    return entry is not None and all(importlib.util.find_spec(m) is not None
                                     for m in entry.modules)


def extra_of(name: str) -> str:
    entry = samplers().get(name) or trainers().get(name)
    return entry.extra if entry else name


def apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def auto_sampling_backend(model_kind: str, apple: bool, installed: set[str]) -> str:
    """The rule of the table above, as a pure function of the machine's facts."""
    if apple and "mlx" in installed and (model_kind != "gguf" or "torch" in installed):
        return "mlx"  # a GGUF is converted to an HF folder first, which needs transformers
    return "llamacpp" if model_kind == "gguf" else "torch"


def auto_training_backend(apple: bool, installed: set[str]) -> str:
    return "mlx" if apple and "mlx" in installed else "torch"


def installed_backends() -> set[str]:
    return {name for name in samplers() if is_available(name)}


def _require(name: str) -> str:
    if not is_available(name):
        raise UserError(f"the {name} backend is not installed; run `pip install "
                        f"'ssd-local[{extra_of(name)}]'` (or `make setup`)")
    return name


def choose_sampling_backend(model_kind: str, requested: str | None) -> str:
    """``requested`` if given, else the automatic rule; it must be installed."""
    return _require(requested or auto_sampling_backend(model_kind, apple_silicon(),
                                                       installed_backends()))


def choose_training_backend(requested: str | None) -> str:
    return _require(requested or auto_training_backend(apple_silicon(), installed_backends()))
