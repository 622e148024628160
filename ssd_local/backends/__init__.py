"""Engines. Each module imports its heavy library inside functions, so importing this
package is cheap and a machine without one stack never loads it."""

from __future__ import annotations

import importlib.util
import platform

from ..app.errors import UserError


def is_available(name: str) -> bool:
    mods = {"llamacpp": ["llama_cpp"], "torch": ["torch", "transformers"],
            "mlx": ["mlx", "mlx_lm"]}[name]
    return all(importlib.util.find_spec(m) is not None for m in mods)


def apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def choose_sampling_backend(model_kind: str, requested: str | None) -> str:
    """GGUF -> llama.cpp; HF folder -> torch (MLX on Apple silicon when installed)."""
    if requested:
        name = requested
    elif model_kind == "gguf":
        name = "llamacpp"
    else:
        name = "mlx" if apple_silicon() and is_available("mlx") else "torch"
    if not is_available(name):
        extra = {"llamacpp": "llama", "torch": "torch", "mlx": "mlx"}[name]
        raise UserError(f"the {name} backend is not installed; run `pip install "
                        f"'ssd-local[{extra}]'` (or `make setup`)")
    return name
