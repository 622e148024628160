"""The lens on a GGUF: next-token logits at every position of a text, through llama.cpp's
low-level batch API (the same library and tokenizer ``LlamaCppEngine`` samples with).

One sequence, fed in chunks of ``chunk`` tokens (``n_batch``); logits are requested only
at the positions whose next token is scored (the last prompt token and every completion
token but the last). The context is set up as the sampler's (flash attention where
supported), so the rows are the distributions sampling drew from. It is sized to the
longest text so far, capped at the model's trained context; a text that starts like the previous one (the same system
message, the same prompt) keeps the KV cells of the shared prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .llamacpp import LlamaCppEngine, _Batch, _common_prefix


class LlamaCppScorer:
    name = "llamacpp"

    def __init__(self, path: Path, *, n_threads: int | None = None, n_gpu_layers: int = -1):
        import llama_cpp as lc

        self._lc = lc
        self._engine = LlamaCppEngine(path, n_threads=n_threads, n_gpu_layers=n_gpu_layers)
        self.path = Path(path)
        self.eos_id = self._engine.eos_id
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._engine.vocab))
        self._ctx: Any = None
        self._shape: tuple[int, int] = (0, 0)  # (n_ctx, n_batch) of the context
        self._cached: list[int] = []  # the tokens whose KV cells the context holds

    # -- tokens ----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._engine.tokenize(text)

    def piece(self, token: int) -> str:
        return self._engine.piece(token, special=True).decode(errors="replace")

    def context_length(self) -> int:
        return self._engine.context_length()

    # -- logits ----------------------------------------------------------------------------
    def _context(self, n_tokens: int, chunk: int) -> Any:
        """A context for ``n_tokens`` fed ``chunk`` at a time: reused while it fits, else
        replaced by one twice as large (capped at the model's trained context)."""
        lc = self._lc
        n_ctx, n_batch = self._shape
        if self._ctx is not None and n_tokens <= n_ctx and chunk == n_batch:
            return self._ctx
        self._free_ctx()
        cp = lc.llama_context_default_params()
        cp.n_ctx = min(max(n_tokens, 2 * n_ctx, chunk, 256), self.context_length())
        cp.n_batch = chunk
        cp.n_ubatch = min(chunk, 512)
        cp.n_seq_max = 1
        # as the sampler runs (LlamaCppEngine): flash attention where supported. It moves
        # logits visibly (up to ~1.3 on SmolLM2 Q4_1), so the lens must see what sampling saw
        cp.flash_attn_type = -1
        cp.n_threads = cp.n_threads_batch = self._engine.n_threads
        cp.no_perf = True
        ctx = lc.llama_init_from_model(self._engine.model, cp)
        if not ctx:
            raise UserError(f"llama.cpp could not allocate a context of {cp.n_ctx} tokens "
                            "for the lens; lower --max-tokens or --chunk")
        self._ctx, self._shape, self._cached = ctx, (int(cp.n_ctx), chunk), []
        return ctx

    def logits(self, tokens: Sequence[int], first: int, *, chunk: int
               ) -> Iterator[tuple[int, Any]]:
        import numpy as np

        lc = self._lc
        tokens = list(tokens)
        if not 1 <= first <= len(tokens):
            raise ValueError("first must index a token after the first one")
        if first == len(tokens):
            return  # nothing to score
        if len(tokens) > self.context_length():
            raise UserError(f"a text of {len(tokens)} tokens exceeds the model's context "
                            f"({self.context_length()})")
        chunk = min(chunk, self.context_length())
        # The last token's own logits predict past the text: it is never decoded.
        feed = tokens[:-1]
        ctx = self._context(len(feed), chunk)
        mem = lc.llama_get_memory(ctx)
        keep = _common_prefix(feed, self._cached, first - 1)  # re-decode from first - 1 on
        if not lc.llama_memory_seq_rm(mem, 0, keep, -1):
            lc.llama_memory_clear(mem, True)
            keep = 0
        self._cached = feed[:keep]
        b = _Batch(lc, chunk)
        try:
            for start in range(keep, len(feed), chunk):
                b.n = 0
                end = min(start + chunk, len(feed))
                for pos in range(start, end):
                    b.put(feed[pos], pos, 0, pos >= first - 1)
                b.batch.n_tokens = b.n
                rc = lc.llama_decode(ctx, b.batch)
                if rc != 0:
                    self._cached = []
                    raise RuntimeError(f"llama_decode failed with code {rc}")
                self._cached = feed[:end]
                lo = max(start, first - 1)
                if lo >= end:
                    continue
                rows = np.empty((end - lo, self.n_vocab), dtype=np.float32)
                for r, pos in enumerate(range(lo, end)):
                    ptr = lc.llama_get_logits_ith(ctx, pos - start)
                    rows[r] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                yield lo - (first - 1), rows
        finally:
            lc.llama_batch_free(b.batch)

    # -- cleanup ---------------------------------------------------------------------------
    def _free_ctx(self) -> None:
        if self._ctx is not None:
            self._lc.llama_free(self._ctx)
            self._ctx, self._cached = None, []

    def close(self) -> None:
        self._free_ctx()
        self._engine.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
