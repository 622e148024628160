"""The llama.cpp engine (llama-cpp-python's low-level API).

Sampling is batched across sequences with continuous batching: ``batch_size`` slots share
one context; each step decodes one token for every live sequence, and a slot freed by a
finished sequence takes the next prompt in the same ``llama_decode`` call. Each sequence
owns a sampler chain (temperature -> top-k -> top-p -> draw) seeded with its own seed, so
a sample does not depend on which others shared its batch.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .base import (DEFAULT_BATCH, EngineStats, GenerationRequest, GenerationResult, Messages,
                   SamplingParams)

_LOG_LOCK = threading.Lock()
_LOG_CALLBACK: Any = None  # keep the ctypes callback alive
LAST_ERRORS: deque[str] = deque(maxlen=50)


def quiet_logs() -> None:
    """Route llama.cpp's own logging away from the user's terminal; keep errors."""
    global _LOG_CALLBACK
    import llama_cpp as lc

    with _LOG_LOCK:
        if _LOG_CALLBACK is not None:
            return

        @lc.llama_log_callback
        def _cb(level: int, text: bytes, _user: Any) -> None:
            if level in (2, 3) and text:  # GGML_LOG_LEVEL_WARN, _ERROR
                LAST_ERRORS.append(text.decode(errors="replace").rstrip())

        _LOG_CALLBACK = _cb
        lc.llama_log_set(_cb, ctypes.c_void_p(0))
        # llama.cpp logs while models are freed at interpreter exit, after this callback's
        # Python objects may be gone: hand logging back to C first.
        import atexit

        atexit.register(_restore_logs)


def _restore_logs() -> None:
    """At exit: hand logging back to llama.cpp's own (C) logger, whose last words about
    freeing buffers go to a closed stderr instead of the user's screen."""
    import llama_cpp as lc

    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        pass
    lc.llama_log_set(ctypes.cast(None, lc.llama_log_callback), ctypes.c_void_p(0))


def make_sampler(params: SamplingParams, seed: int) -> Any:
    """The paper's order: temperature, then top-k, then top-p, then sample."""
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if params.temperature <= 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(params.temperature))
    if params.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(params.top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def _common_prefix(a: list[int], b: list[int], cap: int) -> int:
    n = min(len(a), len(b), cap)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class _Batch:
    """One ``llama_batch`` being filled: ``put`` appends a token of a sequence."""

    def __init__(self, lc: Any, size: int):
        self.batch = lc.llama_batch_init(size, 0, 1)
        self.size = size
        self.n = 0

    def put(self, tok: int, pos: int, sid: int, logits: bool) -> None:
        b, n = self.batch, self.n
        b.token[n] = tok
        b.pos[n] = pos
        b.n_seq_id[n] = 1
        b.seq_id[n][0] = sid
        b.logits[n] = logits
        self.n = n + 1


@dataclass
class _Seq:
    index: int  # into requests
    sampler: Any
    pos: int  # next position to write
    logit_idx: int  # where this sequence's logits are in the current batch
    limit: int  # last position this sequence may use
    out: list[int] = field(default_factory=list)
    last: int = 0


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, path: Path, *, n_threads: int | None = None, n_gpu_layers: int = -1,
                 vocab_only: bool = False):
        import llama_cpp as lc

        self._lc = lc
        lc.llama_backend_init()
        quiet_logs()
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        mp.vocab_only = vocab_only  # the tokenizer and metadata only (rendering prompts)
        self.path = Path(path)
        self.model = lc.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self.model:
            detail = LAST_ERRORS[-1] if LAST_ERRORS else "unknown error"
            raise UserError(f"llama.cpp cannot load {self.path.name} ({detail}); check that "
                            "it is a complete GGUF file")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_threads = n_threads or os.cpu_count() or 1
        self._ctx: Any = None
        self._ctx_shape: tuple[int, int, int] | None = None

    # -- model facts -----------------------------------------------------------------------
    def context_length(self) -> int:
        return int(self._lc.llama_model_n_ctx_train(self.model))

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._lc.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._lc.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace")

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Chat-rendered text already holds its special tokens: parse them, add none."""
        lc = self._lc
        data = text.encode()
        n_max = len(data) + 16
        buf = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, True)
        if n < 0:
            n_max = -n
            buf = (lc.llama_token * n_max)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, True)
        return list(buf[:n])

    @property
    def eos_id(self) -> int | None:
        eos = int(self._lc.llama_vocab_eos(self.vocab))
        return eos if eos >= 0 else None

    def encode(self, text: str) -> list[int]:
        return self.tokenize(text)

    def stats(self) -> EngineStats | None:
        return None

    def render(self, messages: Messages) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.meta("tokenizer.chat_template")
        if not template:
            raise UserError(f"{self.path.name} has no chat template; SSD needs an instruct or "
                            "thinking (chat) model")
        bos = self.piece(self._lc.llama_vocab_bos(self.vocab), special=True).decode(
            errors="replace")
        eos = self.piece(self._lc.llama_vocab_eos(self.vocab), special=True).decode(
            errors="replace")
        return Jinja2ChatFormatter(template, eos, bos)(messages=messages).prompt

    # -- generation ------------------------------------------------------------------------
    def _context(self, n_slots: int, n_ctx: int, n_batch: int) -> Any:
        lc = self._lc
        shape = (n_slots, n_ctx, n_batch)
        if self._ctx is not None and self._ctx_shape == shape:
            lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
            return self._ctx
        self._free_ctx()
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = min(n_batch, 512)
        cp.n_seq_max = n_slots
        cp.kv_unified = True
        cp.flash_attn_type = -1  # auto: on where supported (faster batched decode on CPU)
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.no_perf = True
        ctx = lc.llama_init_from_model(self.model, cp)
        if not ctx:
            raise UserError(f"llama.cpp could not allocate a context of {n_ctx} tokens; lower "
                            "--batch-size or --max-new-tokens")
        self._ctx, self._ctx_shape = ctx, shape
        return ctx

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int = DEFAULT_BATCH, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        if not requests:
            return
        lc = self._lc
        seen: dict[str, list[int]] = {}  # a prompt sampled N times is tokenized once
        for r in requests:
            if r.prompt_text not in seen:
                seen[r.prompt_text] = self.tokenize(r.prompt_text)
        tokens = [seen[r.prompt_text] for r in requests]
        ctx_train = self.context_length()
        longest = max(len(t) for t in tokens)
        if longest >= ctx_train:
            raise UserError(f"a prompt is {longest} tokens, the model's context is {ctx_train}; "
                            "shorten the prompts")
        per_seq = min(ctx_train, longest + params.max_new_tokens)
        n_slots = max(1, min(batch_size, len(requests)))
        n_batch = max(512, longest + n_slots)
        ctx = self._context(n_slots, n_slots * per_seq, n_batch)
        b = _Batch(lc, n_batch)
        pending = deque(range(len(requests)))
        live: dict[int, _Seq] = {}
        free = list(range(n_slots))
        try:
            while pending or live:
                if cancel is not None and cancel.is_set():
                    return
                b.n = 0
                for sid, s in live.items():
                    b.put(s.last, s.pos, sid, True)
                    s.logit_idx, s.pos = b.n - 1, s.pos + 1
                self._admit(b, requests, tokens, params, per_seq, pending, free, live, ctx)
                b.batch.n_tokens = b.n
                rc = lc.llama_decode(ctx, b.batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed with code {rc}")
                yield from self._finished(requests, tokens, params, live, free, ctx)
        finally:
            for s in live.values():
                if s.sampler is not None:
                    lc.llama_sampler_free(s.sampler)
            lc.llama_batch_free(b.batch)
            if live:
                lc.llama_memory_clear(lc.llama_get_memory(ctx), True)

    def _admit(self, b: "_Batch", requests: Sequence[GenerationRequest],
               tokens: list[list[int]], params: SamplingParams, per_seq: int, pending: deque,
               free: list[int], live: dict[int, "_Seq"], ctx: Any) -> None:
        """Prefill pending prompts into free slots while the batch has room. A prompt reuses
        the KV cells of the longest prefix a live sequence already computed (the shared
        system message; the same prompt sampled N times)."""
        mem = self._lc.llama_get_memory(ctx)
        computed = [(s.index, sid) for sid, s in live.items()]
        while pending and free and (b.n == 0 or b.n + len(tokens[pending[0]]) <= b.size):
            i, sid = pending.popleft(), free.pop()
            t = tokens[i]
            shared, src = 0, -1
            for other, osid in computed:
                k = _common_prefix(t, tokens[other], len(t) - 1)
                if k > shared:
                    shared, src = k, osid
            if shared:
                self._lc.llama_memory_seq_cp(mem, src, sid, 0, shared)
            for j in range(shared, len(t)):
                b.put(t[j], j, sid, j == len(t) - 1)
            live[sid] = _Seq(i, make_sampler(params, requests[i].seed), len(t), b.n - 1,
                             min(per_seq, len(t) + params.max_new_tokens))
            if not computed:
                break  # first step: prefill one prompt, so the next can share it

    def _finished(self, requests: Sequence[GenerationRequest], tokens: list[list[int]],
                  params: SamplingParams, live: dict[int, "_Seq"], free: list[int],
                  ctx: Any) -> Iterator[GenerationResult]:
        """Draw each live sequence's next token; yield and free the ones that ended."""
        lc = self._lc
        for sid, s in list(live.items()):
            tok = lc.llama_sampler_sample(s.sampler, ctx, s.logit_idx)
            reason = None
            if lc.llama_vocab_is_eog(self.vocab, tok):
                reason = "stop"
            else:
                s.out.append(tok)
                s.last = tok
                if s.pos >= s.limit or len(s.out) >= params.max_new_tokens:
                    reason = "length"
            if reason is None:
                continue
            del live[sid]
            free.append(sid)
            lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), sid, -1, -1)
            lc.llama_sampler_free(s.sampler)
            s.sampler = None
            text = b"".join(self.piece(t) for t in s.out).decode(errors="replace")
            yield GenerationResult(requests[s.index].key, text, len(tokens[s.index]),
                                   len(s.out), reason, tuple(s.out))

    # -- cleanup ---------------------------------------------------------------------------
    def _free_ctx(self) -> None:
        if self._ctx is not None:
            self._lc.llama_free(self._ctx)
            self._ctx = None

    def close(self) -> None:
        self._free_ctx()
        if getattr(self, "model", None):
            self._lc.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
