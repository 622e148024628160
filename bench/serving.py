"""Serving overhead: `ssd-local serve` against llama-cpp-python's server started directly on
the same GGUF, one after the other in one command run, same requests.

    .venv/bin/python bench/serving.py                 # the embedded SmolLM2-135M Q4_1
    .venv/bin/python bench/serving.py --gguf RUN_OR_FILE --rounds 5

Both run with interrupt_requests off (ssd-local's setting: concurrent clients queue instead
of cutting each other off). For 1 client and for 4 concurrent clients it streams chat completions through the real
`openai` client (greedy, a fixed max_tokens) and reports time to first token, tokens/s per
stream and aggregate tokens/s; then the overhead of ssd-local against the direct server.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def one_stream(base: str, model: str, max_tokens: int, out: list) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="none")
    t0 = time.perf_counter()
    first, n = None, 0
    stream = client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0.0, stream=True,
        messages=[{"role": "user", "content": "Write a Python function that checks whether "
                   "a string is a palindrome, with a docstring and two examples."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    out.append((first - t0 if first else float("nan"), n, (n - 1) / max(end - first, 1e-9)
                if first else 0.0, end))


def measure(base: str, model: str, clients: int, max_tokens: int, rounds: int) -> dict:
    ttft, per_stream, aggregate = [], [], []
    for _ in range(rounds):
        out: list = []
        t0 = time.perf_counter()
        threads = [threading.Thread(target=one_stream, args=(base, model, max_tokens, out))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = max(o[3] for o in out) - t0
        ttft += [o[0] for o in out]
        per_stream += [o[2] for o in out]
        aggregate.append(sum(o[1] for o in out) / wall)
    ttft = [x for x in ttft if x == x]  # a stream with no content has no first token
    return {"ttft": statistics.median(ttft), "tps": statistics.median(per_stream),
            "agg": statistics.median(aggregate)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default="smollm2-135m", help="a run name, .gguf or smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    from ssd_local.app.serving import plan

    p = plan(a.gguf)
    threads = str(os.cpu_count() or 1)
    servers = {
        "llama_cpp.server direct": lambda port: [
            sys.executable, "-m", "llama_cpp.server", "--model", str(p.path), "--host",
            "127.0.0.1", "--port", str(port), "--model_alias", p.model_id, "--n_ctx", "8192",
            "--n_threads", threads, "--n_threads_batch", threads, "--verbose", "False",
            "--interrupt_requests", "False"],
        "ssd-local serve": lambda port: [
            sys.executable, "-m", "ssd_local.cli", "serve", a.gguf, "--port", str(port),
            "--n-ctx", "8192"],
    }
    print(f"{p.path.name}: greedy, {a.max_tokens} tokens per stream, median of {a.rounds} "
          "rounds", flush=True)
    results: dict = {}
    for name, cmd in servers.items():
        port = free_port()
        proc = start(cmd(port), port)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            measure(base, p.model_id, 1, 8, 1)  # warm-up
            results[name] = {c: measure(base, p.model_id, c, a.max_tokens, a.rounds)
                             for c in (1, 4)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        for c, r in results[name].items():
            print(f"  {name:24s} {c} client{'s' if c > 1 else ' '}: TTFT {r['ttft'] * 1000:6.0f} ms"
                  f"  {r['tps']:6.1f} tok/s per stream  {r['agg']:6.1f} tok/s aggregate",
                  flush=True)
    d, o = results["llama_cpp.server direct"], results["ssd-local serve"]
    for c in (1, 4):
        print(f"  overhead at {c} client{'s' if c > 1 else ''}: tokens/s "
              f"{(1 - o[c]['agg'] / d[c]['agg']) * 100:+.1f}%, TTFT "
              f"{(o[c]['ttft'] / d[c]['ttft'] - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
