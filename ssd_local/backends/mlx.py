"""The MLX engine (mlx-lm): HF folders on Apple silicon (Metal), or on MLX's CPU build.

Sampling uses mlx-lm's continuous batching (``BatchGenerator``, what ``batch_generate``
runs): ``batch_size`` sequences decode together and a finished one frees its slot for the
next prompt. Each sequence gets its own sampler, built here rather than with mlx-lm's
``make_sampler``: in mlx-lm 0.32 that one applies top-p, then top-k, to the *untempered*
distribution and divides by the temperature only when drawing, so top-p keeps a different
set than the paper's temperature -> top-k -> top-p. Ours follows the paper's order.

Seeds: every sampler draws from its own key chain started from the request's seed, so a
sample's random numbers do not depend on which other sequences shared its batch. Its
logits can still move by float noise with the batch's shape (padding, batched matmuls),
so a sample is reproduced exactly by the same command on the same machine; with another
--batch-size it is reproduced up to that noise.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import UserError
from .base import (DEFAULT_BATCH, EngineStats, GenerationRequest, GenerationResult, Messages,
                   SamplingParams, encode_prompts, render_chat)


def config_overrides(folder: Path) -> dict[str, Any]:
    """transformers 5 writes the rotary settings as ``rope_parameters``; mlx-lm 0.32 reads
    ``rope_theta``/``rope_scaling`` and would silently fall back to its defaults."""
    cfg = json.loads((Path(folder) / "config.json").read_text())
    rp = cfg.get("rope_parameters")
    out: dict[str, Any] = {}
    if isinstance(rp, dict):
        if "rope_theta" not in cfg and "rope_theta" in rp:
            out["rope_theta"] = rp["rope_theta"]
        kind = rp.get("rope_type", "default")
        if kind != "default" and not cfg.get("rope_scaling"):
            out["rope_scaling"] = {**{k: v for k, v in rp.items() if k != "rope_theta"},
                                   "type": kind}
    return out


def load(folder: Path) -> tuple[Any, Any]:
    """mlx-lm's model and tokenizer wrapper for an HF folder (quantized mlx-community
    folders too)."""
    from mlx_lm import load as mlx_load

    try:
        return mlx_load(str(folder), model_config=config_overrides(folder))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise UserError(f"mlx-lm cannot load {folder} ({exc}); check the model folder") from exc


def paper_sampler(params: SamplingParams, seed: int) -> Callable[[Any], Any]:
    """Temperature, then top-k, then top-p, then a draw from this sequence's own key.
    Takes log-probabilities of shape (rows, vocab); returns one token id per row."""
    import mlx.core as mx

    state = {"key": mx.random.key(seed & 0xFFFFFFFF)}
    t, k, p = params.temperature, params.top_k, params.top_p

    def sample(logprobs: Any) -> Any:
        if t <= 0:
            return mx.argmax(logprobs, axis=-1)
        x = logprobs.astype(mx.float32) / t
        vocab = x.shape[-1]
        if 0 < k < vocab:
            drop = mx.argpartition(-x, kth=k - 1, axis=-1)[..., k:]
            x = mx.put_along_axis(x, drop, mx.array(-float("inf"), x.dtype), axis=-1)
        if p < 1.0:
            order = mx.argsort(-x, axis=-1)
            sx = mx.take_along_axis(x, order, axis=-1)
            probs = mx.softmax(sx, axis=-1)
            before = mx.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above
            n_keep = mx.maximum((before < p).sum(axis=-1, keepdims=True), 1)
            floor = mx.take_along_axis(sx, n_keep - 1, axis=-1)
            x = mx.where(x < floor, -float("inf"), x)
        key, sub = mx.random.split(state["key"])
        state["key"] = key
        return mx.random.categorical(x, key=sub)

    return sample


class MlxEngine:
    name = "mlx"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.model, self.wrapper = load(self.folder)
        self.tokenizer = self.wrapper._tokenizer  # the transformers tokenizer inside
        self._eos = sorted(set(self.wrapper.eos_token_ids or [])
                           | ({self.tokenizer.eos_token_id}
                              if self.tokenizer.eos_token_id is not None else set()))

    def context_length(self) -> int:
        cfg = json.loads((self.folder / "config.json").read_text())
        return int(cfg.get("max_position_embeddings") or 32768)

    def stats(self) -> EngineStats | None:
        return None

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int = DEFAULT_BATCH, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        if not requests:
            return
        from mlx_lm.generate import BatchGenerator

        tok = self.tokenizer
        encoded = encode_prompts(tok, [r.prompt_text for r in requests])
        ctx = self.context_length()
        if max(len(e) for e in encoded) >= ctx:
            raise UserError(f"a prompt is {max(len(e) for e in encoded)} tokens, the model's "
                            f"context is {ctx}; shorten the prompts")
        n = len(requests)
        gen = BatchGenerator(self.model, stop_tokens=[[t] for t in self._eos],
                             max_tokens=params.max_new_tokens,
                             completion_batch_size=batch_size,
                             prefill_batch_size=min(batch_size, n))
        try:
            uids = gen.insert(encoded, [params.max_new_tokens] * n,
                              samplers=[paper_sampler(params, r.seed) for r in requests])
            index = {uid: i for i, uid in enumerate(uids)}
            out: dict[int, list[int]] = {uid: [] for uid in uids}
            while True:
                if cancel is not None and cancel.is_set():
                    return
                responses = gen.next_generated()
                if not responses:
                    break
                for r in responses:
                    if r.finish_reason != "stop":  # the end-of-turn token is not text
                        out[r.uid].append(int(r.token))
                    if r.finish_reason is None:
                        continue
                    i = index[r.uid]
                    ids = out.pop(r.uid)
                    reason = "stop" if r.finish_reason == "stop" else "length"
                    text = tok.decode(ids, skip_special_tokens=True)
                    yield GenerationResult(requests[i].key, text, len(encoded[i]), len(ids),
                                           reason, tuple(ids))
        finally:
            gen.close()

    def close(self) -> None:
        self.model = None
