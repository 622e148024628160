"""The PyTorch engine (transformers): HF folders on CUDA (bf16), Apple MPS (fp16) or CPU
(fp32). Sampling is batched with left padding; prompts are grouped by length so a batch
wastes little on padding. Decoding uses a fresh GenerationConfig with only our settings,
so a model's own generation_config (penalties, min-p) never leaks in."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .base import (DEFAULT_BATCH, EngineStats, GenerationRequest, GenerationResult, Messages,
                   SamplingParams, encode_prompts, render_chat)


def pick_device(requested: str | None = None) -> tuple[str, Any]:
    import torch

    if requested:
        dev = requested
    elif torch.cuda.is_available():
        dev = "cuda"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        dev = "mps"
    else:
        dev = "cpu"
    dtype = {"cuda": torch.bfloat16, "mps": torch.float16}.get(dev.split(":")[0], torch.float32)
    return dev, dtype


class _CancelCriteria:
    """Stops ``generate`` between steps once the cancel event is set."""

    def __init__(self, cancel: threading.Event | None):
        self.cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = bool(self.cancel is not None and self.cancel.is_set())
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                          device=input_ids.device)


class TorchEngine:
    name = "torch"

    def __init__(self, folder: Path, *, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self._torch = torch
        self.device, self.dtype = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder),
                                                              dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"transformers cannot load {folder} ({exc}); check the model "
                            "folder") from exc
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers fills unset fields of a passed GenerationConfig from the model's own
        # generation_config.json (penalties, min-p...): keep only its stop tokens.
        from transformers import GenerationConfig

        self._eos = self._eos_ids()
        self.model.generation_config = GenerationConfig(
            eos_token_id=self._eos, pad_token_id=self.tokenizer.pad_token_id)

    def context_length(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", 0) or 32768)

    def stats(self) -> EngineStats | None:
        return None

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gc = getattr(self.model, "generation_config", None)
        for src in (getattr(gc, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif src:
                ids.update(src)
        return sorted(ids)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int = DEFAULT_BATCH, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        from transformers import GenerationConfig, StoppingCriteriaList

        torch = self._torch
        tok = self.tokenizer
        encoded = encode_prompts(tok, [r.prompt_text for r in requests])
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        eos = self._eos
        greedy = params.temperature <= 0
        gen = GenerationConfig(
            do_sample=not greedy, max_new_tokens=params.max_new_tokens,
            temperature=None if greedy else params.temperature,
            top_k=None if greedy else params.top_k, top_p=None if greedy else params.top_p,
            eos_token_id=eos, pad_token_id=tok.pad_token_id)
        stop = StoppingCriteriaList([_CancelCriteria(cancel)])
        for start in range(0, len(order), batch_size):
            if cancel is not None and cancel.is_set():
                return
            idx = order[start:start + batch_size]
            padded = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            input_ids = padded["input_ids"].to(self.device)
            mask = padded["attention_mask"].to(self.device)
            # One seed per batch: the first request's. Reproducible for the same command.
            torch.manual_seed(requests[idx[0]].seed)
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                          generation_config=gen, stopping_criteria=stop)
            if cancel is not None and cancel.is_set():
                return
            new = out[:, input_ids.shape[1]:].tolist()
            for row, i in zip(new, idx):
                n, reason = len(row), "length"
                for j, t in enumerate(row):
                    if t in eos:
                        n, reason = j, "stop"
                        break
                text = tok.decode(row[:n], skip_special_tokens=True)
                yield GenerationResult(requests[i].key, text, len(encoded[i]), n, reason)

    def close(self) -> None:
        self.model = None
