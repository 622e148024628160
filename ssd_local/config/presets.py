"""The paper's decoding, per model family: how SSD samples its training data (T_train), how
the tuned model is decoded (T_eval), and the base model's best setting. Values come from the
paper's tables (README: "Presets")."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    """Temperature, then top-k, then top-p (the paper's order). top_k=0 and top_p=1.0
    switch truncation off; temperature 0 is greedy."""

    temperature: float
    top_k: int
    top_p: float

    def describe(self) -> str:
        k = self.top_k if self.top_k else "off"
        p = self.top_p if self.top_p < 1.0 else "off"
        return f"T={self.temperature:g} top-k={k} top-p={p}"

    def short(self) -> str:
        """``T/top-k/top-p`` with '-' for a switched-off truncation (tables)."""
        return f"{_num(self.temperature)}/{self.top_k or '-'}/{_num(self.top_p)}"

    def overridden(self, temperature: float | None = None, top_k: int | None = None,
                   top_p: float | None = None) -> "Decoding":
        """This decoding with every explicitly given value in its place (explicit wins)."""
        return Decoding(self.temperature if temperature is None else temperature,
                        self.top_k if top_k is None else top_k,
                        self.top_p if top_p is None else top_p)

    def as_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}

    @classmethod
    def from_dict(cls, d: dict) -> "Decoding":
        return cls(float(d["temperature"]), int(d["top_k"]), float(d["top_p"]))


def _num(x: float) -> str:
    return f"{x:.1f}" if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: Decoding  # T_train: how SSD samples its training data
    eval: Decoding  # T_eval: how the tuned model is decoded
    base: Decoding  # the base model's best decoding in the paper
    thinking: bool = False  # thinking models keep their native template, no system message


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("qwen3-instruct", "paper: Qwen3-4B-Instruct-2507",
           Decoding(1.6, 20, 0.8), Decoding(1.1, 20, 0.8), Decoding(0.7, 20, 0.8)),
    Preset("qwen3-30b-instruct", "paper: Qwen3-30B-A3B-Instruct-2507",
           Decoding(1.6, 20, 0.8), Decoding(0.9, 20, 0.8), Decoding(0.7, 20, 0.8)),
    Preset("qwen3-thinking", "paper: Qwen3-4B-Thinking-2507",
           Decoding(1.1, 20, 0.95), Decoding(0.7, 20, 0.95), Decoding(0.6, 20, 0.95), True),
    Preset("qwen3-30b-thinking", "paper: Qwen3-30B-A3B-Thinking-2507",
           Decoding(1.2, 20, 0.95), Decoding(0.7, 20, 0.95), Decoding(0.6, 20, 0.95), True),
    Preset("llama3-instruct", "paper: Llama-3.1-8B-Instruct",
           Decoding(0.8, 20, 0.8), Decoding(0.7, 20, 0.8), Decoding(0.9, 0, 0.8)),
    Preset("gpt-oss", "paper: GPT-OSS-20B (high)",
           Decoding(1.2, 0, 1.0), Decoding(1.0, 20, 0.95), Decoding(1.0, 0, 1.0), True),
    # Not in the paper. Small or unknown instruct models: a moderate T_train with the
    # paper's truncation, and T_eval so that T_eff = T_train x T_eval = 1.1, just under
    # the paper's peak (about 1.2); small models fall apart sooner when decoded hot.
    Preset("generic", "not in the paper: small or unknown models",
           Decoding(1.0, 20, 0.8), Decoding(1.1, 20, 0.8), Decoding(0.7, 20, 0.8)),
]}
FALLBACK_PRESET = "generic"

# The paper's instruction for instruct models, in our words: answer in Python, in a
# markdown code block. Thinking models get no system message (their native template).
SYSTEM_PROMPT = ("You are an expert Python programmer. Solve the user's programming problem "
                 "in Python 3. Give the complete solution in a single markdown code block "
                 "(```python ... ```).")


def detect_preset(model_name: str) -> str:
    """Pick the paper's preset from a model's name; 'generic' when nothing matches."""
    n = model_name.lower()
    big = bool(re.search(r"30b|32b|a3b", n))
    if "qwen3" in n:
        if "thinking" in n:
            return "qwen3-30b-thinking" if big else "qwen3-thinking"
        return "qwen3-30b-instruct" if big else "qwen3-instruct"
    if re.search(r"llama[-_ ]?3", n):
        return "llama3-instruct"
    if "gpt-oss" in n:
        return "gpt-oss"
    return FALLBACK_PRESET


def preset(name: str | None) -> Preset:
    """The named preset; an unknown or missing name falls back to 'generic'."""
    return PRESETS.get(name or FALLBACK_PRESET, PRESETS[FALLBACK_PRESET])
