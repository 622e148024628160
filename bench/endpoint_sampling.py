"""Sampling through a served engine: aggregate tokens/s at concurrency 1, 4 and 16 against
the server `ssd-local serve` starts (and llama.cpp's own `llama-server` when one is given),
compared in the same run with the in-process batched llama.cpp engine on the same prompts.

    .venv/bin/python bench/endpoint_sampling.py                    # embedded SmolLM2-135M
    .venv/bin/python bench/endpoint_sampling.py --prompts 32 --max-new-tokens 64 \\
        --llama-server PATH/TO/llama-server

Same prompts per concurrency level (builtin, rendered with the model's own template; a
different set per level so no server answers from its prompt cache), same decoding
(T=1.0, top-k 20, top-p 0.8), one seed per request; generated tokens are counted from each
engine's own report, so runs that stop early are measured fairly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(render, n: int, offset: int = 0) -> list:
    from ssd_local.config import SYSTEM_PROMPT
    from ssd_local.app.prompts import load_builtin, messages
    from ssd_local.app.sampling import derive_seed
    from ssd_local.backends.base import GenerationRequest

    return [GenerationRequest((p.id, 0), render(messages(p, SYSTEM_PROMPT)),
                              derive_seed(0, p.id, 0)) for p in load_builtin()[offset:offset + n]]


def measure(engine, reqs, params, batch: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = sum(r.completion_tokens for r in engine.generate(reqs, params, batch_size=batch))
    return tokens / (time.perf_counter() - t0), tokens


def serve(cmd: list[str], url: str) -> subprocess.Popen:
    from ssd_local.backends.endpoint import wait_until_up

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_until_up(url, 180):
        proc.kill()
        raise SystemExit(f"server did not start: {' '.join(cmd)}")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--llama-server", help="a llama-server binary to measure as well")
    args = ap.parse_args()

    from ssd_local.app.models import resolve
    from ssd_local.backends.base import SamplingParams
    from ssd_local.backends.endpoint import EndpointEngine
    from ssd_local.backends.llamacpp import LlamaCppEngine
    from ssd_local.backends.registry import open_tokenizer

    model = resolve("smollm2-135m")
    handle = open_tokenizer(model.kind, model.path)
    render = handle.render
    params = SamplingParams(1.0, 20, 0.8, args.max_new_tokens)
    levels = [int(x) for x in args.concurrency.split(",")]
    # Each level gets its own prompts (the same ones for every engine), so no server can
    # answer from a prompt cache filled by an earlier level.
    warm = requests_for(render, 2, 118)
    sets = {b: requests_for(render, args.prompts, i * args.prompts)
            for i, b in enumerate(levels)}
    handle.close()
    if args.prompts * len(levels) > 118:
        raise SystemExit("not enough builtin prompts for distinct sets; lower --prompts")
    rows: list[tuple[str, float, int]] = []

    eng = LlamaCppEngine(model.path)
    measure(eng, warm, params, 2)  # warm up
    for b in levels:
        tps, tok = measure(eng, sets[b], params, b)
        rows.append((f"in-process llama.cpp engine, batch {b}", tps, tok))
        print(f"  ... {rows[-1][0]}: {tps:.1f} tok/s", file=sys.stderr, flush=True)
    eng.close()

    servers = [("ssd-local serve", lambda port: [sys.executable, "-m", "ssd_local.cli", "serve",
                                                 "smollm2-135m", "--port", str(port)])]
    if args.llama_server:
        servers.append(("llama-server", lambda port: [
            args.llama_server, "-m", str(model.path), "--port", str(port), "--host",
            "127.0.0.1", "-np", str(max(levels)), "-c", str(max(levels) * 1024),
            "-t", str(os.cpu_count() or 1)]))
    for name, cmd in servers:
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        proc = serve(cmd(port), url)
        try:
            ep = EndpointEngine(url, tokenizer=open_tokenizer(model.kind, model.path))
            measure(ep, warm, params, 2)
            for b in levels:
                tps, tok = measure(ep, sets[b], params, b)
                rows.append((f"{name}, concurrency {b}", tps, tok))
                print(f"  ... {rows[-1][0]}: {tps:.1f} tok/s", file=sys.stderr, flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    ref = max(tps for name, tps, _ in rows if name.startswith("in-process"))
    print(f"{args.prompts} builtin prompts, {args.max_new_tokens} new tokens max, "
          f"T=1.0 top-k 20 top-p 0.8, SmolLM2-135M Q4_1, {os.cpu_count()} CPU cores")
    for name, tps, tok in rows:
        print(f"  {name:42s} {tps:7.1f} tok/s  ({tok} tokens)  {tps / ref:5.2f}x of the best "
              "in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
