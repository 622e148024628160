"""The lens on a Hugging Face folder: next-token logits at every position of a text, by a
plain forward pass (transformers), chunked with the KV cache so a long text never needs
one huge activation. The output layer runs only where a logit row is wanted (the
positions are a suffix of each chunk: ``logits_to_keep``).

Weights are float32 on the CPU (the lens reads small probabilities, which half precision
blurs); on CUDA or MPS the engine's usual half-precision type."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .torch import pick_device


class TorchScorer:
    name = "torch"

    def __init__(self, folder: Path, *, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .hf import quiet_transformers

        quiet_transformers()
        self._torch = torch
        self.device, self.dtype = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"transformers cannot load {folder} ({exc}); check the model "
                            "folder") from exc
        self.model.to(self.device).eval()
        self.eos_id = self.tokenizer.eos_token_id
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def piece(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 32768)

    def _forward(self, ids: Any, cache: Any, keep: int) -> tuple[Any, Any]:
        """(the last ``keep`` logit rows, the cache) of one chunk. transformers 5 names the
        cache ``cache`` (``past_key_values`` before); older models lack logits_to_keep."""
        kwargs: dict[str, Any] = {self._cache_arg: cache, "use_cache": True}
        if self._keep_arg:
            kwargs["logits_to_keep"] = max(keep, 1)
        out = self.model(input_ids=ids, **kwargs)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return (out.logits[0, -keep:] if keep else None), cache

    def logits(self, tokens: Sequence[int], first: int, *, chunk: int
               ) -> Iterator[tuple[int, Any]]:
        torch = self._torch
        if not 1 <= first <= len(tokens):
            raise ValueError("first must index a token after the first one")
        if first == len(tokens):
            return  # nothing to score
        if len(tokens) > self.context_length():
            raise UserError(f"a text of {len(tokens)} tokens exceeds the model's context "
                            f"({self.context_length()})")
        feed = torch.tensor([list(tokens[:-1])], dtype=torch.long, device=self.device)
        cache = None
        with torch.inference_mode():
            for start in range(0, feed.shape[1], chunk):
                end = min(start + chunk, feed.shape[1])
                keep = max(0, end - max(start, first - 1))
                rows, cache = self._forward(feed[:, start:end], cache, keep)
                if keep:
                    yield end - keep - (first - 1), rows.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
