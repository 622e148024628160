"""Backend names -> factories. The built-in engines register here through the same
``register_sampler`` / ``register_trainer`` calls another engine would use, so the core
never branches on a backend's name: it asks the registry for a factory. Registering costs
nothing: a factory imports its engine library only when it is called."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .base import SamplingEngine, Scorer, Tokenizer, Trainer


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., object]
    modules: tuple[str, ...]  # importable modules it needs (to tell what is installed)
    extra: str  # the pip extra that installs it: ssd-local[EXTRA]
    model_kinds: tuple[str, ...] = ("gguf", "hf")  # what a sampler loads itself


_SAMPLERS: dict[str, Entry] = {}
_TRAINERS: dict[str, Entry] = {}
_SCORERS: dict[str, Entry] = {}  # the lens: next-token logits per position


def register_sampler(name: str, factory: Callable[[Path], SamplingEngine], *,
                     modules: tuple[str, ...], extra: str,
                     model_kinds: tuple[str, ...] = ("hf",)) -> None:
    """``factory(path)`` opens the model at ``path`` (a GGUF file or an HF folder, as
    ``model_kinds`` says) for sampling."""
    _SAMPLERS[name] = Entry(name, factory, modules, extra, model_kinds)


def register_trainer(name: str, factory: Callable[[], Trainer], *,
                     modules: tuple[str, ...], extra: str) -> None:
    _TRAINERS[name] = Entry(name, factory, modules, extra)


def register_scorer(name: str, factory: Callable[[Path], Scorer], *,
                    modules: tuple[str, ...], extra: str, model_kinds: tuple[str, ...]) -> None:
    """``factory(path)`` opens the model at ``path`` for the lens (one engine per kind)."""
    _SCORERS[name] = Entry(name, factory, modules, extra, model_kinds)


def scorers() -> dict[str, Entry]:
    _load_builtins()
    return dict(_SCORERS)


def open_scorer(model_kind: str, path: Path) -> Scorer:
    """The lens's engine for a model of ``model_kind``: the scorer registered for it."""
    import importlib.util

    entry = next((e for e in scorers().values() if model_kind in e.model_kinds), None)
    if entry is None:
        raise UserError(f"no lens engine reads {model_kind} models")
    if not all(importlib.util.find_spec(m) is not None for m in entry.modules):
        raise UserError(f"the lens reads {model_kind} models with {entry.name}, which is not "
                        f"installed; run `pip install 'ssd-local[{entry.extra}]'`")
    return entry.factory(path)  # type: ignore[return-value]


def samplers() -> dict[str, Entry]:
    _load_builtins()
    return dict(_SAMPLERS)


def trainers() -> dict[str, Entry]:
    _load_builtins()
    return dict(_TRAINERS)


def open_sampler(name: str, path: Path) -> SamplingEngine:
    entry = samplers().get(name)
    if entry is None:
        raise UserError(f"unknown sampling backend '{name}'; use one of: "
                        + ", ".join(samplers()))
    return entry.factory(path)  # type: ignore[return-value]


def open_trainer(name: str) -> Trainer:
    entry = trainers().get(name)
    if entry is None:
        raise UserError(f"unknown training backend '{name}'; use one of: "
                        + ", ".join(trainers()))
    return entry.factory()  # type: ignore[return-value]


# -- the built-in engines ------------------------------------------------------------------
def _llamacpp(path: Path) -> SamplingEngine:
    from .llamacpp import LlamaCppEngine

    return LlamaCppEngine(path)


def _torch(path: Path) -> SamplingEngine:
    from .torch import TorchEngine

    return TorchEngine(path)


def _mlx(path: Path) -> SamplingEngine:
    from .mlx import MlxEngine

    return MlxEngine(path)


def _llamacpp_scorer(path: Path) -> Scorer:
    from .llamacpp_score import LlamaCppScorer

    return LlamaCppScorer(path)


def _torch_scorer(path: Path) -> Scorer:
    from .torch_score import TorchScorer

    return TorchScorer(path)


def _torch_trainer() -> Trainer:
    from .torch_train import TorchTrainer

    return TorchTrainer()


def _mlx_trainer() -> Trainer:
    from .mlx_train import MlxTrainer

    return MlxTrainer()


_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    register_sampler("llamacpp", _llamacpp, modules=("llama_cpp",), extra="llama",
                     model_kinds=("gguf",))
    register_sampler("torch", _torch, modules=("torch", "transformers"), extra="torch")
    register_sampler("mlx", _mlx, modules=("mlx", "mlx_lm"), extra="mlx")
    register_trainer("torch", _torch_trainer, modules=("torch", "transformers", "peft"),
                     extra="torch")
    register_trainer("mlx", _mlx_trainer, modules=("mlx", "mlx_lm", "transformers"),
                     extra="mlx")
    register_scorer("llamacpp", _llamacpp_scorer, modules=("llama_cpp",), extra="llama",
                    model_kinds=("gguf",))
    register_scorer("torch", _torch_scorer, modules=("torch", "transformers"), extra="torch",
                    model_kinds=("hf",))


def open_tokenizer(model_kind: str, path: Path) -> Tokenizer:
    """A model's tokenizer and chat template without its weights: a GGUF opened
    vocabulary-only through llama.cpp, an HF folder through transformers."""
    if model_kind == "gguf":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(path, vocab_only=True)
    from .hf import HFTokenizer

    return HFTokenizer(path)
