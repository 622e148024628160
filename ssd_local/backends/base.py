"""Contracts between the core and the engines. Light module: no engine imports here."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence


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


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt exactly as a Hugging Face tokenizer's chat template renders it, with the
    generation prompt appended (the torch and mlx engines, and endpoint prompts)."""
    from ..app.errors import UserError

    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model has no chat template; SSD needs an instruct or "
                        "thinking (chat) model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class SamplingEngine(Protocol):
    name: str  # "llamacpp" | "torch" | "mlx"

    def render(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template, with the generation prompt appended."""

    def context_length(self) -> int:
        """The model's trained context window, in tokens."""

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        """Yield each result as soon as its sequence ends (any order). Stops early, without
        yielding unfinished sequences, once ``cancel`` is set."""

    def close(self) -> None: ...
