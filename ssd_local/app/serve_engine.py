"""What the serving engine gets for a plan, and what it reports while it serves.

Slots (``--slots``, default auto). A slot is one request being decoded; the engine decodes
all busy slots together (continuous batching), and each slot has its own window of
``--n-ctx`` tokens and its own prompt cache. The automatic count is the smaller of
- compute: twice the CPU cores, at least 2 and at most 8 (on 2 cores: 4; 4 concurrent
  clients gave the best aggregate tokens/s on a 2-core machine), or 16 on a GPU;
- memory: what is free (RAM, or the GPU's memory when the model is offloaded) after the
  weights (the GGUF's size) and a reserve of a tenth (at least 1 GiB), divided by one
  slot's KV cache (n_ctx x layers x KV heads x head size x 2 (K and V) x 2 bytes, from the
  GGUF's header); so a larger model or a longer window gets fewer slots.
The host-memory prompt cache (saved slot states, which keep a long shared prefix across
unrelated requests) gets at most a quarter of the RAM left after that, up to llama.cpp's
own 8 GiB.

GPU: every layer that fits goes to the GPU when the llama.cpp build can offload (CUDA,
Metal), unless ``--gpu-layers`` says otherwise.

Tools: a model whose chat template does not render tools gets a template that refuses them
(HTTP 400 naming tools), see ``backends.chat_tools``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from ..config import ServeConfig

GiB = 2**30
LLAMA_CACHE_RAM_MIB = 8192  # llama.cpp's own cap of its host-memory prompt cache
CPU_SLOTS_MAX, GPU_SLOTS = 8, 16


@dataclass(frozen=True)
class Layout:
    """The engine's settings that depend on the machine, with the reason in words."""

    slots: int
    why: str  # e.g. "auto: 2 cores -> 4; memory allows 97"
    gpu_layers: int
    device: str  # "CPU" or the GPU's name
    threads: int
    cache_ram_mib: int
    tools: bool  # the model's template takes tools (else they are refused with a 400)


def kv_bytes_per_token(gguf: Path) -> int | None:
    """K and V in f16 for every layer, from the GGUF header (None: not readable)."""
    from ..backends.gguf_shape import read_header
    from ..errors import UserError

    try:
        meta, _ = read_header(gguf)
    except UserError:
        return None
    arch = meta.get("general.architecture")
    get = lambda k: meta.get(f"{arch}.{k}")  # noqa: E731
    layers, heads = get("block_count"), get("attention.head_count")
    kv_heads = get("attention.head_count_kv") or heads
    head_dim = get("attention.key_length") or (
        get("embedding_length") // heads if get("embedding_length") and heads else None)
    if not all(isinstance(v, int) and v > 0 for v in (layers, kv_heads, head_dim)):
        return None
    return 2 * layers * kv_heads * head_dim * 2


def default_slots(cores: int, free: int | None, model_bytes: int, kv_slot: int | None,
                  gpu: bool) -> tuple[int, str]:
    """The automatic slot count and why (the rule is in the module docstring)."""
    compute = GPU_SLOTS if gpu else max(2, min(CPU_SLOTS_MAX, 2 * cores))
    why = "GPU" if gpu else f"{cores} cores"
    if free is None or not kv_slot:
        return compute, f"auto: {why} -> {compute}"
    budget = free - model_bytes - max(GiB, free // 10)
    by_memory = max(1, budget // kv_slot)
    n = min(compute, by_memory)
    return n, (f"auto: {why} -> {compute}; {free / GiB:.1f} GiB free allows {by_memory} of "
               f"{kv_slot / 2**20:.0f} MiB KV each")


def layout(gguf: Path, cfg: ServeConfig) -> Layout:
    """Slots, GPU layers, threads and the prompt cache for serving ``gguf`` here."""
    from ..backends import chat_tools, llama_server, probe

    gpus = llama_server.gpus()
    on_gpu = bool(gpus) and cfg.gpu_layers != 0
    model_bytes = gguf.stat().st_size
    per_token = kv_bytes_per_token(gguf)
    kv_slot = per_token * cfg.n_ctx if per_token else None
    ram = probe.available_ram()
    free = int(gpus[0]["memory_free"]) if on_gpu else ram
    cores = os.cpu_count() or 1
    if cfg.slots is not None:
        slots, why = cfg.slots, "--slots"
    else:
        slots, why = default_slots(cores, free, model_bytes, kv_slot, on_gpu)
    left = (ram or 0) - (0 if on_gpu else model_bytes + slots * (kv_slot or 0))
    cache = max(0, min(LLAMA_CACHE_RAM_MIB, left // 4 // 2**20))
    gpu_layers = cfg.gpu_layers if cfg.gpu_layers is not None else (-1 if on_gpu else 0)
    device = (gpus[0]["description"] or gpus[0]["name"]) if on_gpu else "CPU"
    return Layout(slots, why, gpu_layers, device, cfg.threads or cores, int(cache),
                  chat_tools.supports_tools(gguf))


@dataclass(frozen=True)
class ServeStats:
    """The engine's live numbers, from ``/metrics``."""

    slots: int
    busy: int  # requests being decoded now
    deferred: int  # requests waiting for a free slot
    tokens_per_s: float  # tokens decoded per second since the previous reading
    generated: int  # tokens of finished requests
    prompt_tokens: int  # prompt tokens computed (not taken from a cache)
    cached_tokens: int  # prompt tokens taken from a slot's cache

    def describe(self) -> str:
        return (f"{self.busy}/{self.slots} slots busy"
                + (f", {self.deferred} waiting" if self.deferred else "")
                + f", {self.tokens_per_s:.1f} tok/s; {self.generated} tokens generated, "
                  f"{self.cached_tokens} prompt tokens from cache")


class StatsReader:
    """Turns successive ``/metrics`` readings into ``ServeStats``. Decoded tokens per
    second: the number of ``llama_decode`` calls times the busy slots per call (llama.cpp
    counts a request's generated tokens only when it finishes), so prompt batches count as
    one token per slot."""

    def __init__(self, slots: int):
        self.slots = slots
        self._last: tuple[float, float] | None = None

    def read(self, m: dict[str, float], now: float | None = None) -> ServeStats:
        now = time.monotonic() if now is None else now
        decoded = m.get("n_decode_total", 0.0) * m.get("n_busy_slots_per_decode", 0.0)
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = max(0.0, decoded - self._last[1]) / (now - self._last[0])
        self._last = (now, decoded)
        return ServeStats(self.slots, int(m.get("requests_processing", 0)),
                          int(m.get("requests_deferred", 0)), rate,
                          int(m.get("tokens_predicted_total", 0)),
                          int(m.get("prompt_tokens_total", 0)),
                          int(m.get("prompt_tokens_cached_total", 0)))
