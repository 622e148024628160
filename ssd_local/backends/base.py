"""Contracts between the core and the engines: the request and result dataclasses, and the
Protocols the core is typed against (a sampling engine, a tokenizer, a scorer, a trainer).
Light module: no engine library is imported here."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from ..config import EngineOptions, field_defaults
from ..errors import UserError

Messages = list[dict[str, str]]
# sequences in flight when a caller names none: the config's --batch-size default
DEFAULT_BATCH: int = field_defaults(EngineOptions)["batch_size"]


# -- sampling ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingParams:
    """Decoding in the paper's order: temperature, then top-k, then top-p, then sample.
    No min-p, no penalties. temperature 0 = greedy; top_k 0 and top_p 1.0 = off."""

    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class GenerationRequest:
    key: tuple[str, int]  # (prompt_id, sample_index)
    prompt_text: str  # the chat-rendered prompt, exactly as the model sees it
    seed: int  # this sample's own seed


@dataclass(frozen=True)
class GenerationResult:
    key: tuple[str, int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) | "length" (hit max_new_tokens)
    token_ids: tuple[int, ...] = ()  # the generated tokens, end token excluded


@dataclass
class EngineStats:
    """What a served engine reports while it works (local engines report none)."""

    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # "prompt_id#index: reason"

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries,
                "retry_reasons": dict(self.retry_reasons), "failed": len(self.failed),
                "peak_in_flight": self.peak_in_flight}


class SamplingEngine(Protocol):
    name: str  # "llamacpp" | "torch" | "mlx" | "endpoint"

    def render(self, messages: Messages) -> str:
        """The model's own chat template, with the generation prompt appended."""

    def context_length(self) -> int:
        """The model's trained context window, in tokens (0: the server's business)."""

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int = DEFAULT_BATCH, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        """Yield each result as soon as its sequence ends (any order), with at most
        ``batch_size`` sequences (or requests) in flight. Stops early, without yielding
        unfinished sequences, once ``cancel`` is set."""

    def stats(self) -> EngineStats | None:
        """Live figures of a served engine; None for in-process engines."""

    def close(self) -> None: ...


class Tokenizer(Protocol):
    """A model's tokenizer and chat template, without its weights."""

    eos_id: int | None

    def render(self, messages: Messages) -> str: ...

    def encode(self, text: str) -> list[int]:
        """Token ids of chat-rendered text (its special tokens parsed, none added)."""

    def close(self) -> None: ...


class Scorer(Protocol):
    """A model that reads a text and gives the next-token logits at each position (the
    lens). Opened per model kind: ``registry.open_scorer``."""

    name: str  # "llamacpp" | "torch"
    eos_id: int | None
    n_vocab: int  # width of a logit row

    def encode(self, text: str) -> list[int]:
        """Token ids of chat-rendered text (its special tokens parsed, none added), as the
        sampling engine of this kind tokenizes."""

    def piece(self, token: int) -> str:
        """A token's text, for display."""

    def context_length(self) -> int: ...

    def logits(self, tokens: Sequence[int], first: int, *, chunk: int
               ) -> Iterator[tuple[int, Any]]:
        """The raw logits from which each of ``tokens[first:]`` was drawn: row ``i`` is the
        distribution at position ``first + i - 1``. Yields ``(i0, rows)`` per forward
        chunk of at most ``chunk`` tokens: ``rows`` is a float32 numpy array
        (n, n_vocab) for rows ``i0 .. i0 + n - 1``; chunks of prompt only yield nothing."""

    def close(self) -> None: ...


def render_chat(tokenizer: Any, messages: Messages) -> str:
    """The prompt exactly as a Hugging Face tokenizer's chat template renders it, with the
    generation prompt appended (the torch and mlx engines, and endpoint prompts)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model has no chat template; SSD needs an instruct or "
                        "thinking (chat) model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of chat-rendered prompts (special tokens parsed, none added), each distinct
    text once: a prompt sampled N times, or one problem's n answers, shares one encoding."""
    seen: dict[str, list[int]] = {}
    for t in texts:
        if t not in seen:
            seen[t] = tokenizer(t, add_special_tokens=False)["input_ids"]
    return [seen[t] for t in texts]


# -- training ------------------------------------------------------------------------------
IGNORE = -100  # the label of a token that carries no loss


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_response(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class StepReport:
    step: int
    total: int
    loss: float
    lr: float
    tokens_per_s: float
    peak_mem_mb: float
    val_loss: float | None = None
    # mlx only: response (trained) tokens per second of training compute, the figure
    # mlx-lm itself reports; None on torch
    trained_tokens_per_s: float | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """What a trainer hands back after its last step."""

    steps: int
    train_loss: float
    val_loss: float | None
    tokens: int


@dataclass(frozen=True)
class World:
    """The processes of one training launch (one, or several under torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainDevice:
    """Where a trainer runs and the memory it may use, for the memory plan the core makes
    before any weight is loaded (``app/memory.py``)."""

    framework: str  # "torch" | "mlx"
    kind: str  # "cuda" | "metal" | "cpu"
    available: int  # bytes free for training now (the smallest over a launch's processes)
    source: str  # what ``available`` is, for the user: e.g. "available RAM"
    act_bytes: float | None = None  # per activation element; None: the weights' own dtype
    weight_bytes: float | None = None  # per weight as loaded; None: as stored
    shards: int = 1  # processes that split the weights and optimizer state (FSDP)


class Trainer(Protocol):
    name: str  # "torch" | "mlx"
    world: World

    def tokenizer(self, folder: Path) -> Tokenizer: ...

    def device(self) -> TrainDevice:
        """The device training will use and its free memory, measured without loading a
        model (every process of a launch reports the same figure)."""

    def train(self, folder: Path, out_dir: Path, cfg: Any, train_set: list[Example],
              val_set: list[Example], *, on_step: Callable[[StepReport], None],
              cancel: threading.Event | None = None) -> TrainOutcome:
        """Train, writing ``out_dir/checkpoints/`` and the final adapter (or weights);
        resumes from the newest checkpoint there."""

    def fuse(self, base_folder: Path, out_dir: Path, generation: dict[str, Any], *,
             full: bool) -> Path:
        """Merge into ``out_dir/merged``, a standard transformers folder."""
