"""Serving throughput: `ssd-local serve` against today's engine, llama-cpp-python's server
(`python -m llama_cpp.server`), and against llama.cpp's own server run directly through
xllamacpp with no ssd-local code at all, side by side in one run.

    .venv/bin/python bench/serving.py                  # the embedded SmolLM2-135M Q4_1
    .venv/bin/python bench/serving.py --gguf demo --rounds 3 --max-tokens 64

All three servers are up at once (same GGUF, same threads, same context per request; the
two llama.cpp servers with the same slots). For 1, 4 and 8 concurrent clients (each sends
``--requests`` chat completions one after another through the real `openai` client) it
measures aggregate generated tokens/s (each engine's own ``usage.completion_tokens`` over
the wall time) and the servers' user CPU seconds (the process and its children, psutil).
Every request carries the same sampling (T 1.0, top-k 20, top-p 0.8, min-p 0, no
penalties) and its own seed. Each level has its own prompts (builtin coding prompts) and
each round tags the system message, so no server answers from a prompt cache. The machine
this runs on may be shared: the configurations take turns within each round (the order
rotates), medians over the rounds are reported, and the load average during the run is
printed with them.

Then the time to first token of a request that shares a ~2,000-token prefix with the one
before it (streaming, 4 tokens, T 0): the first request computes the prefix (cold), the
second finds it in the slot's prompt cache.

ssd-local's server process gets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets
it; this benchmark sets it for all three alike (``--omp-wait-policy``), so the comparison
is of the servers, not of the setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVELS = (1, 4, 8)
RAW = """
import os, signal, sys, threading, xllamacpp as xlc
path, port, slots, n_ctx, threads, alias = sys.argv[1:]
p = xlc.CommonParams()
p.model.path, p.hostnames, p.port = path, ["127.0.0.1"], int(port)
p.n_parallel, p.n_ctx, p.kv_unified = int(slots), int(slots) * int(n_ctx), False
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(threads)
p.n_gpu_layers, p.model_alias, p.verbosity = 0, {alias}, 1
server = xlc.Server(p)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
os._exit(0)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(target: str, path: str, model_id: str, slots: int, n_ctx: int, threads: int
             ) -> dict[str, object]:
    t = str(threads)
    return {
        "ssd-local serve": lambda port: [
            sys.executable, "-m", "ssd_local.cli", "serve", target, "--port", str(port),
            "--n-ctx", str(n_ctx), "--slots", str(slots), "--threads", t],
        "llama_cpp.server": lambda port: [
            sys.executable, "-m", "llama_cpp.server", "--model", path, "--host", "127.0.0.1",
            "--port", str(port), "--model_alias", model_id, "--n_ctx", str(n_ctx),
            "--n_threads", t, "--n_threads_batch", t, "--n_gpu_layers", "0", "--verbose",
            "False", "--interrupt_requests", "False"],
        "xllamacpp raw": lambda port: [
            sys.executable, "-c", RAW, path, str(port), str(slots), str(n_ctx), t, model_id],
    }


def start(cmd: list[str], url: str, env: dict) -> subprocess.Popen:
    from ssd_local.backends.endpoint import wait_until_up

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if not wait_until_up(url, 300):
        proc.kill()
        raise SystemExit(f"server did not start: {' '.join(cmd[:4])}")
    return proc


def user_cpu(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    return sum(q.cpu_times().user for q in [p, *p.children(recursive=True)])


def chat(base: str, model: str, messages: list, max_tokens: int, seed: int) -> int:
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="none", max_retries=0, timeout=900)
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=1.0, top_p=0.8,
        seed=seed, extra_body={"top_k": 20, "min_p": 0.0, "repeat_penalty": 1.0})
    return r.usage.completion_tokens if r.usage else 0


def level(base: str, model: str, pid: int, convs: list[list], max_tokens: int,
          clients: int) -> dict[str, float]:
    """``clients`` threads share ``convs`` (each takes every clients-th one, in turn)."""
    tokens: list[int] = []
    load0, cpu0, t0 = os.getloadavg()[0], user_cpu(pid), time.perf_counter()

    def client(i: int) -> None:
        for j, msgs in enumerate(convs[i::clients]):
            tokens.append(chat(base, model, msgs, max_tokens, 1000 * i + j))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"tps": sum(tokens) / wall, "tokens": sum(tokens), "wall": wall,
            "cpu": user_cpu(pid) - cpu0, "load": (load0 + os.getloadavg()[0]) / 2}


def conversations(n: int, offset: int, tag: str) -> list[list]:
    from ssd_local.app.prompts import load_builtin, messages
    from ssd_local.config import SYSTEM_PROMPT

    return [messages(p, f"{SYSTEM_PROMPT} [{tag}]") for p in load_builtin()[offset:offset + n]]


def ttft(base: str, model: str, prefix: str, question: str) -> tuple[float, int | None]:
    """Seconds to the first streamed content, and the cached prompt tokens the stream's
    usage reports (None where the server reports none)."""
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="none", max_retries=0, timeout=900)
    msgs = [{"role": "user", "content": f"{prefix}\n\nQuestion: {question}"}]
    t0 = time.perf_counter()
    first, cached = None, None
    for chunk in client.chat.completions.create(model=model, messages=msgs, max_tokens=4,
                                                temperature=0.0, stream=True,
                                                stream_options={"include_usage": True}):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        details = getattr(chunk.usage, "prompt_tokens_details", None) if chunk.usage else None
        cached = getattr(details, "cached_tokens", None) if details else cached
    return (first if first is not None else float("nan")), cached


def long_prefix(chars: int) -> str:
    from ssd_local.app.prompts import load_builtin

    text, out = "", []
    for i, p in enumerate(load_builtin()):
        out.append(f"Task {i + 1}. {p.text}")
        text = "\n\n".join(out)
        if len(text) >= chars:
            break
    return "Here are coding tasks for reference.\n\n" + text


def report(results: dict, names: list[str], rounds: int) -> None:
    print(f"\naggregate generated tokens/s, median of {rounds} rounds (user CPU s per 1k "
          "tokens; load average)")
    print(f"  {'clients':>7}  " + "  ".join(f"{n:>26}" for n in names)
          + "  serve/llama_cpp.server  serve/raw")
    for c in LEVELS:
        med = {n: {k: statistics.median(r[k] for r in results[n][c]) for k in
                   ("tps", "cpu", "tokens", "load")} for n in names}
        cells = "  ".join(f"{med[n]['tps']:7.1f} ({1000 * med[n]['cpu'] / max(med[n]['tokens'], 1):4.1f}"
                          f" s; {med[n]['load']:4.1f})" for n in names)
        s = med["ssd-local serve"]["tps"]
        print(f"  {c:>7}  {cells}  {s / med['llama_cpp.server']['tps']:22.2f}x  "
              f"{s / med['xllamacpp raw']['tps']:8.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default="smollm2-135m", help="a run, a .gguf, or smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=4096, help="tokens per request (slot)")
    ap.add_argument("--slots", type=int, help="slots of both llama.cpp servers (default: "
                    "what `ssd-local serve` picks here)")
    ap.add_argument("--prefix-chars", type=int, default=8000, help="the shared prefix "
                    "(~2,000 tokens at the default)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE")
    ap.add_argument("--json", help="also write every measurement here")
    a = ap.parse_args()

    from ssd_local.app.serve_engine import layout
    from ssd_local.app.serving import plan
    from ssd_local.config import ServeConfig

    p = plan(a.gguf)
    slots = a.slots or layout(p.path, ServeConfig(n_ctx=a.n_ctx)).slots
    threads = os.cpu_count() or 1
    env = dict(os.environ, OMP_WAIT_POLICY=a.omp_wait_policy)
    cmds = commands(a.gguf, str(p.path), p.model_id, slots, a.n_ctx, threads)
    names = list(cmds)
    print(f"{p.path.name}: {slots} slots, {a.n_ctx} tokens per slot, {threads} threads, "
          f"OMP_WAIT_POLICY={a.omp_wait_policy}, {a.max_tokens} new tokens max, "
          f"{a.requests} requests per client; load average at start "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    procs, bases = {}, {}
    try:
        for n in names:
            port = free_port()
            bases[n] = f"http://127.0.0.1:{port}/v1"
            procs[n] = start(cmds[n](port), bases[n], env)  # type: ignore[operator]
            chat(bases[n], p.model_id, conversations(1, 119, "warm-up")[0], 8, 0)
        results: dict = {n: {c: [] for c in LEVELS} for n in names}
        for r in range(a.rounds):
            offset = 0
            for c in LEVELS:
                convs = conversations(c * a.requests, offset, f"round {r}")
                offset += c * a.requests
                for k in range(len(names)):  # the order rotates every round and level
                    n = names[(k + r + c) % len(names)]
                    m = level(bases[n], p.model_id, procs[n].pid, convs, a.max_tokens, c)
                    results[n][c].append(m)
                    print(f"  round {r + 1} {c} clients {n:18s} {m['tps']:6.1f} tok/s  "
                          f"{m['tokens']} tokens  CPU {m['cpu']:5.1f} s  load {m['load']:4.1f}",
                          flush=True)
        report(results, names, a.rounds)
        prefix = long_prefix(a.prefix_chars)
        print("\ntime to first token, a ~2,000-token shared prefix (cached prompt tokens)")
        firsts = {}
        for n in names:
            cold, c1 = ttft(bases[n], p.model_id, prefix, "Which task sorts a list?")
            warm, c2 = ttft(bases[n], p.model_id, prefix, "Which task parses dates?")
            firsts[n] = (cold, warm, c1, c2)
            print(f"  {n:18s} first {cold:7.2f} s   second (shared prefix) {warm:6.2f} s"
                  f"   ({c2 if c2 is not None else '-'} cached)  load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"results": results, "ttft": firsts}, indent=1))
    finally:
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
