"""Sampling throughput: our batched engines against the plain one-sequence-at-a-time loop
of the same library, side by side in one process, same model, prompts, settings and seed.

    .venv/bin/python bench/sampling.py                      # both pairs, 8 prompts
    .venv/bin/python bench/sampling.py --prompts 16 --engines llamacpp

Pairs:
  llamacpp: ssd-local's continuous-batching engine vs llama_cpp.Llama.create_completion
            called once per prompt (SmolLM2-135M Q4_1, the embedded default);
  torch:    ssd-local's left-padded batched engine vs model.generate one prompt at a time
            (the same model converted to a transformers folder).
Prints generated tokens/s for each and the ratio (ours / plain).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_local.app import models, prompts  # noqa: E402
from ssd_local.config import SYSTEM_PROMPT  # noqa: E402
from ssd_local.app.sampling import derive_seed  # noqa: E402
from ssd_local.backends.base import GenerationRequest, SamplingParams  # noqa: E402

T, TOP_K, TOP_P = 1.0, 20, 0.8


def requests_for(engine, n: int) -> list[GenerationRequest]:
    return [GenerationRequest((p.id, 0), engine.render(prompts.messages(p, SYSTEM_PROMPT)),
                              derive_seed(0, p.id, 0))
            for p in prompts.load("builtin", limit=n)]


def timed(fn) -> tuple[int, float]:
    t0 = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - t0


def bench_llamacpp(n: int, max_new: int, batch: int, threads: int,
                   model: str = "smollm2-135m") -> tuple[float, float]:
    import llama_cpp

    from ssd_local.backends.llamacpp import LlamaCppEngine

    path = models.resolve(model).path
    ours = LlamaCppEngine(path, n_threads=threads)
    reqs = requests_for(ours, n)
    params = SamplingParams(T, TOP_K, TOP_P, max_new)
    tok_ours, dt_ours = timed(lambda: sum(
        r.completion_tokens for r in ours.generate(reqs, params, batch_size=batch)))
    ours.close()

    llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, verbose=False)

    def plain() -> int:
        total = 0
        for r in reqs:
            out = llm.create_completion(r.prompt_text, max_tokens=max_new, temperature=T,
                                        top_k=TOP_K, top_p=TOP_P, min_p=0.0,
                                        repeat_penalty=1.0, seed=r.seed)
            total += out["usage"]["completion_tokens"]
        return total

    tok_plain, dt_plain = timed(plain)
    return report(f"llamacpp ({path.name})", n, tok_ours, dt_ours, tok_plain, dt_plain)


def bench_torch(n: int, max_new: int, batch: int, threads: int) -> tuple[float, float]:
    import torch
    from transformers import GenerationConfig

    from ssd_local.backends.torch import TorchEngine

    torch.set_num_threads(threads)
    folder = models.ensure_hf_folder(models.resolve("smollm2-135m"))
    ours = TorchEngine(folder, device="cpu")
    reqs = requests_for(ours, n)
    params = SamplingParams(T, TOP_K, TOP_P, max_new)
    tok_ours, dt_ours = timed(lambda: sum(
        r.completion_tokens for r in ours.generate(reqs, params, batch_size=batch)))

    model, tok = ours.model, ours.tokenizer
    gen = GenerationConfig(do_sample=True, temperature=T, top_k=TOP_K, top_p=TOP_P,
                           max_new_tokens=max_new, eos_token_id=ours._eos,
                           pad_token_id=tok.pad_token_id)

    def plain() -> int:
        total = 0
        for r in reqs:
            ids = tok(r.prompt_text, add_special_tokens=False, return_tensors="pt")
            torch.manual_seed(r.seed)
            with torch.inference_mode():
                out = model.generate(**ids, generation_config=gen)
            new = out[0, ids["input_ids"].shape[1]:].tolist()
            total += next((j for j, t in enumerate(new) if t in ours._eos), len(new))
        return total

    tok_plain, dt_plain = timed(plain)
    return report("torch", n, tok_ours, dt_ours, tok_plain, dt_plain)


def requantized(ref: str) -> str:
    """``NAME@q8_0``: NAME's GGUF requantized to Q8_0 with llama.cpp's own quantizer."""
    import ctypes
    import tempfile

    import llama_cpp

    if "@" not in ref:
        return ref
    base, qtype = ref.split("@")
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}
    src = models.resolve(base).path
    dst = Path(tempfile.gettempdir()) / f"{src.stem}-{qtype}.gguf"
    if not dst.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype[qtype]
        params.allow_requantize = True
        if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                          ctypes.byref(params)) != 0:
            raise SystemExit(f"could not requantize {src} to {qtype}")
    return str(dst)


def report(name, n, tok_ours, dt_ours, tok_plain, dt_plain) -> tuple[float, float]:
    ours, plain = tok_ours / dt_ours, tok_plain / dt_plain
    print(f"{name} {n:3d} prompts | ssd-local batched {ours:7.1f} tok/s ({tok_ours} tok, "
          f"{dt_ours:.1f}s) | plain loop {plain:7.1f} tok/s ({tok_plain} tok, {dt_plain:.1f}s)"
          f" | ratio {ours / plain:.2f}x", flush=True)
    return ours, plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--engines", default="llamacpp,torch")
    ap.add_argument("--gguf", default="smollm2-135m,smollm2-135m@q8_0",
                    help="models for the llamacpp pair, comma-separated; NAME@q8_0 is NAME "
                         "requantized to Q8_0 (llama.cpp's CPU kernels batch Q8_0 better)")
    a = ap.parse_args()
    print(f"settings: T={T} top-k={TOP_K} top-p={TOP_P}, max_new_tokens={a.max_new_tokens}, "
          f"batch={a.batch_size}, threads={a.threads}")
    for name in a.engines.split(","):
        if name == "llamacpp":
            for ref in a.gguf.split(","):
                bench_llamacpp(a.prompts, a.max_new_tokens, a.batch_size, a.threads,
                               requantized(ref))
        else:
            bench_torch(a.prompts, a.max_new_tokens, a.batch_size, a.threads)


if __name__ == "__main__":
    main()
