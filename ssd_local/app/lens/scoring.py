"""Texts scored by a model: tokenized as the engines do, logit rows from the backend's
scorer (chunked, with progress events), measured by ``stats``; ``compare`` does it for the
base and the tuned model and summarises."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...backends.base import Scorer
from ...backends.registry import open_scorer
from ...config import Decoding, LensConfig
from ...errors import Cancelled, UserError
from ...events import OnEvent, Progress, StageFinished, StageStarted, ignore
from .. import models
from .stats import LABELS, Stats, label, position_stats, summarise


@dataclass(frozen=True)
class Text:
    """One text to score: the chat-rendered prompt, exactly as the model saw it, and the
    completion; ``stop``: the answer ended on the end-of-turn token, which is scored too
    (training learns it)."""

    prompt_text: str
    completion: str
    id: str = ""
    stop: bool = False


@dataclass(frozen=True)
class Encoded:
    text: Text
    prompt: list[int]
    completion: list[int]  # the scored tokens
    cut: bool  # the completion was longer (max_tokens, or the model's context)


@dataclass
class Measured:
    """One model's measurements on some texts: ``stats[i]`` has a row per token of
    ``texts[i].completion``."""

    model: str
    path: str
    engine: str
    n_vocab: int
    decoding: Decoding
    texts: list[Encoded]
    stats: list[Stats]
    pieces: list[list[str]] = field(default_factory=list)

    def all(self) -> Stats:
        return Stats.concat(self.stats)


def as_texts(texts: Iterable[Any]) -> list[Text]:
    """``Text``s, (prompt_text, completion) pairs, or dicts with those keys."""
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, Text):
            out.append(t)
        elif isinstance(t, dict):
            out.append(Text(t["prompt_text"], t["completion"], str(t.get("id", i)),
                            bool(t.get("stop", False))))
        else:
            prompt, completion = t
            out.append(Text(prompt, completion, str(i)))
    return out


def encode(scorer: Scorer, text: Text, max_tokens: int) -> Encoded:
    """The prompt and the completion tokenized apart, as training tokenizes them."""
    prompt = scorer.encode(text.prompt_text)
    completion = scorer.encode(text.completion)
    if text.stop and scorer.eos_id is not None:
        completion.append(scorer.eos_id)
    if not prompt:  # nothing to condition the first token on: it becomes the context
        prompt, completion = completion[:1], completion[1:]
    room = max(0, min(max_tokens, scorer.context_length() - len(prompt)))
    return Encoded(text, prompt, completion[:room], len(completion) > room)


def _resolve(model: str | Path | models.ModelRef) -> models.ModelRef:
    return model if isinstance(model, models.ModelRef) else models.resolve(str(model))


def measure(model: str | Path | models.ModelRef, texts: Iterable[Any], decoding: Decoding, *,
            cfg: LensConfig | None = None, on_event: OnEvent = ignore,
            cancel: threading.Event | None = None, stage: str = "lens",
            same_tokens_as: Measured | None = None) -> Measured:
    """Score ``texts`` with ``model`` (a reference, a path, or a ``ModelRef``: a GGUF
    through llama.cpp, an HF folder through torch) under ``decoding``. With
    ``same_tokens_as``, the texts must tokenize exactly as they did there (checked before
    any scoring)."""
    cfg = cfg or LensConfig()
    cfg.validate()
    ref = _resolve(model)
    scorer = open_scorer(ref.kind, ref.path)
    try:
        enc = [encode(scorer, t, cfg.max_tokens) for t in as_texts(texts)]
        if same_tokens_as is not None:
            check_same_tokens(same_tokens_as, enc, scorer.n_vocab, ref.name)
        out = Measured(ref.name, str(ref.path), scorer.name, scorer.n_vocab, decoding, enc, [])
        _score(scorer, out, cfg, on_event, cancel, stage)
        return out
    finally:
        scorer.close()


def check_same_tokens(base: Measured, enc: list[Encoded], n_vocab: int, name: str) -> None:
    """The tuned model is the base fine-tuned: same vocabulary, same tokens."""
    why = ""
    if n_vocab != base.n_vocab:
        why = f"its vocabulary has {n_vocab} tokens, the base model's {base.n_vocab}"
    for i, (a, b) in enumerate(zip(base.texts, enc)):
        if why:
            break
        if (a.prompt, a.completion) != (b.prompt, b.completion):
            x, y = a.prompt + a.completion, b.prompt + b.completion
            at = next((j for j, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
            why = f"text {a.text.id or i} tokenizes differently from token {at} on"
    if why:
        raise UserError(f"{name} does not share the base model's tokenizer ({why}); the "
                        "lens compares a model with its own fine-tuned version")


def _score(scorer: Scorer, out: Measured, cfg: LensConfig, on_event: OnEvent,
           cancel: threading.Event | None, stage: str) -> None:
    total = sum(len(e.completion) for e in out.texts)
    on_event(StageStarted(stage, total, 0, f"{out.model} ({scorer.name}), "
                                           f"{out.decoding.describe()}"))
    done, start = 0, time.monotonic()
    for ti, e in enumerate(out.texts):
        parts = []
        for i0, rows in scorer.logits(e.prompt + e.completion, len(e.prompt),
                                      chunk=cfg.chunk):
            parts.append(position_stats(rows, out.decoding, e.completion[i0:i0 + len(rows)]))
            done += len(rows)
            on_event(Progress(stage, done, total, {
                "tokens_per_s": done / max(time.monotonic() - start, 1e-9), "texts": ti}))
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{stage} stopped after {done} of {total} tokens; rerun to "
                                "measure again")
        out.stats.append(Stats.concat(parts))
        out.pieces.append([scorer.piece(t) for t in e.completion])
    on_event(StageFinished(stage, "done", {"tokens": total, "texts": len(out.texts)}))


@dataclass
class Comparison:
    """Base and tuned on the same tokens; ``labels[i]`` are text i's positions by the rule
    (on the base model), ``summary`` the means and differences."""

    base: Measured
    tuned: Measured
    labels: list[Any]
    summary: dict[str, Any]
    cfg: LensConfig

    def table(self) -> list[dict[str, Any]]:
        """The per-token table: one entry per text, one column entry per scored token."""
        out = []
        for i, e in enumerate(self.base.texts):
            row: dict[str, Any] = {
                "id": e.text.id, "prompt_tokens": len(e.prompt), "cut": e.cut,
                "tokens": list(e.completion), "pieces": self.base.pieces[i],
                "label": [LABELS[int(x)] for x in self.labels[i]]}
            for side, m in (("base", self.base), ("tuned", self.tuned)):
                row[side] = columns(m.stats[i])
            out.append(row)
        return out


def columns(s: Stats) -> dict[str, list[Any]]:
    """A model's measurements of one text as JSON columns (6 significant digits)."""
    out: dict[str, list[Any]] = {}
    for name in ("kept", "tail", "entropy", "full_entropy", "tail_entropy", "top", "logprob"):
        out[name] = [float(f"{x:.6g}") for x in np.asarray(getattr(s, name))]
    out["survivors"] = [int(x) for x in s.survivors]
    out["in_set"] = [bool(x) for x in s.in_set]
    return out


def compare(base: str | Path | models.ModelRef, tuned: str | Path | models.ModelRef,
            texts: Iterable[Any], decoding: Decoding, *, cfg: LensConfig | None = None,
            on_event: OnEvent = ignore, cancel: threading.Event | None = None) -> Comparison:
    """Score ``texts`` with the base, then the tuned model (one loaded at a time), on the
    same tokens; label the positions on the base model; summarise."""
    cfg = cfg or LensConfig()
    cfg.validate()
    items = as_texts(texts)
    b = measure(base, items, decoding, cfg=cfg, on_event=on_event, cancel=cancel,
                stage="lens base")
    t = measure(tuned, items, decoding, cfg=cfg, on_event=on_event, cancel=cancel,
                stage="lens tuned", same_tokens_as=b)
    labels = [label(s, cfg) for s in b.stats]
    return Comparison(b, t, labels, summarise(b.stats, t.stats, labels, cfg), cfg)
