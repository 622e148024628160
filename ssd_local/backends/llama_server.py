"""The serving engine: llama.cpp's own HTTP server (``llama-server``: parallel slots with
continuous batching, a prompt cache per slot, ``/health``, ``/metrics``, jinja chat
templates with tool-call parsing), embedded by the ``xllamacpp`` wheel, in a child process.

Why a child process: ``xllamacpp.Server`` has no stop method; dropping it blocks until
every client has disconnected, and deadlocks when a client is a thread of the same
process (it holds the GIL meanwhile). So the parent (``LlamaServer``) starts
``python -m ssd_local.backends.llama_server``, hands it the ``EngineSpec`` as one JSON line
on stdin (the API key never shows in ``ps``), reads one JSON report line back (ready, with
``/props``' facts, or the error), and stops it with SIGTERM; the child ends with
``os._exit(0)``, which frees the port at once and cuts any stream still open. The child
also ends when its stdin closes, so a parent killed with -9 leaves no server behind.

Everything ssd-local shapes is set on the engine itself, server-wide, before it listens:
- the decoding a request leaves out: the run's T_eval/top-k/top-p, applied in the paper's
  order (``SAMPLERS``: temperature, then top-k, then top-p); min-p 0 and no penalties, so
  the other samplers in the list do nothing unless a request sets them (a request's own
  values always win, as llama-server does it);
- ``chat_template``: the model's own, or behind a guard that refuses tools (``chat_tools``).
No proxy stands between the clients and the engine.

llama.cpp logs go to the spec's log file (errors only), never to the user's terminal."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..errors import UserError

# The paper's chain, with the other samplers around it so that a request may still ask for
# them: penalties and DRY act on the raw logits before it, the rest after it; at the
# neutral values below (and top-n-sigma's default, -1) each of them does nothing.
SAMPLERS = "penalties;dry;temperature;top_k;top_p;min_p;typ_p;xtc;top_n_sigma"
NEUTRAL = {"min_p": 0.0, "typ_p": 1.0, "xtc_probability": 0.0, "penalty_repeat": 1.0,
           "penalty_freq": 0.0, "penalty_present": 0.0, "dry_multiplier": 0.0,
           "mirostat": 0, "dynatemp_range": 0.0}
REPORT = "SSD-ENGINE "  # the prefix of the child's one report line


@dataclass(frozen=True)
class EngineSpec:
    model_path: str
    alias: str  # the model id clients see in /v1/models and in every response
    host: str
    port: int
    api_key: str | None
    n_ctx: int  # tokens per slot: each request may use a whole window
    slots: int
    threads: int
    gpu_layers: int  # 0: CPU only; -1: as many as fit (llama.cpp's fitting)
    temperature: float
    top_k: int
    top_p: float
    cache_ram_mib: int  # the host-memory prompt cache of saved slot states
    log_path: str
    chat_template: str | None = None  # None: the model's own


def params(spec: EngineSpec) -> Any:
    """``xllamacpp.CommonParams`` for ``spec``; every value read back where the setter may
    drop or rewrite it (the sampler list drops unknown names silently)."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = spec.model_path
    p.model_alias = {spec.alias}
    p.hostnames = [spec.host]
    p.port = spec.port
    if spec.api_key:
        p.api_keys = [spec.api_key]
    p.n_parallel = spec.slots
    p.n_ctx = spec.n_ctx * spec.slots
    p.kv_unified = False  # each slot its own window of n_ctx tokens
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = spec.threads
    p.n_gpu_layers = spec.gpu_layers
    p.cache_ram_mib = spec.cache_ram_mib
    p.use_jinja = True
    if spec.chat_template is not None:
        p.chat_template = spec.chat_template
    p.endpoint_metrics = True
    p.endpoint_slots = False  # /slots shows every client's prompt
    p.verbosity = 1  # errors only, into the log file
    s = p.sampling
    s.samplers = SAMPLERS
    s.temp, s.top_k, s.top_p = spec.temperature, spec.top_k, spec.top_p
    for name, value in NEUTRAL.items():
        setattr(s, name, value)
    if s.samplers != SAMPLERS:
        raise RuntimeError(f"llama.cpp took the sampler order {s.samplers!r}, not {SAMPLERS!r}")
    return p


# -- the child ----------------------------------------------------------------------------
def _child() -> None:
    """``python -m ssd_local.backends.llama_server``: one spec line in, one report line
    out, then serve until SIGTERM/SIGINT or until stdin closes."""
    spec = EngineSpec(**json.loads(sys.stdin.readline()))
    out = os.fdopen(os.dup(1), "w")
    log = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)

    def report(**facts: Any) -> None:
        out.write(REPORT + json.dumps(facts) + "\n")
        out.flush()

    import xllamacpp as xlc

    try:
        server = xlc.Server(params(spec))
    except (RuntimeError, TypeError, ValueError) as exc:
        report(error=str(exc))
        os._exit(1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    url = server.listening_address
    try:
        props = json.loads(_get(url + "/props", spec.api_key))
    except (OSError, ValueError):
        props = {}
    report(url=url, props=props)
    stop.wait()
    os._exit(0)  # not ~Server: it would wait for every client to disconnect


def _get(url: str, key: str | None, wait_s: float = 10.0) -> bytes:
    """GET ``url`` over a kept-alive connection that we close first: urllib asks the
    server to close (``Connection: close``), which leaves the server's port in TIME_WAIT
    after it stops, and a port that cannot be bound at once."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "localhost", u.port, timeout=wait_s)
    try:
        conn.request("GET", u.path, headers={"Authorization": f"Bearer {key}"} if key else {})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise OSError(f"HTTP {r.status} from {u.path}")
        return body
    finally:
        conn.close()


# -- the parent ---------------------------------------------------------------------------
class LlamaServer:
    """One llama.cpp server in a child process: ``start()`` returns once it answers."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.url = f"http://{spec.host}:{spec.port}"
        self.props: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 900.0) -> dict[str, Any]:
        """Load the model and listen; the engine's ``/props`` once it answers."""
        Path(self.spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # ggml's OpenMP threads spin while they wait; on a busy machine that starves the
        # very threads they wait for (decoding measured 5-10x slower); the user's own
        # setting wins
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, text=True, start_new_session=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(asdict(self.spec)) + "\n")
        self._proc.stdin.flush()
        facts = self._report(timeout_s)
        if "error" in facts or "url" not in facts:
            self.stop()
            raise UserError(f"llama.cpp's server did not start on {self.spec.host}:"
                            f"{self.spec.port}: {facts.get('error', 'no answer')}"
                            + self.log_tail())
        self.props = facts.get("props") or {}
        return self.props

    def _report(self, timeout_s: float) -> dict[str, Any]:
        lines: queue.Queue[str] = queue.Queue()
        proc = self._proc
        assert proc is not None and proc.stdout is not None

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith(REPORT):
                    lines.put(line[len(REPORT):])
                    return
            lines.put("")

        threading.Thread(target=read, daemon=True).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            return {"error": f"no answer within {timeout_s:.0f} s"}
        return json.loads(line) if line else {"error": "the engine's process ended"}

    def log_tail(self, lines: int = 8) -> str:
        try:
            tail = Path(self.spec.log_path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n" + "\n".join(tail) + f"\n(log: {self.spec.log_path})") if tail else ""

    def wait(self) -> int:
        """Block until the child ends (it does not on its own); its exit status."""
        return self._proc.wait() if self._proc is not None else 0

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the child; returns once nothing listens on the port any more."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        deadline = time.monotonic() + 10
        while _listening(self.spec.host, self.spec.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def metrics(self, wait_s: float = 5.0) -> dict[str, float]:
        """``/metrics`` (Prometheus text) as {name without ``llamacpp:``: value}."""
        text = _get(self.url + "/metrics", self.spec.api_key, wait_s).decode()
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                try:
                    out[parts[0].removeprefix("llamacpp:")] = float(parts[1])
                except ValueError:
                    pass
        return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM ends the main thread as Ctrl-C does (KeyboardInterrupt)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host if host not in ("0.0.0.0", "") else "localhost", port)) == 0


# -- what the llama.cpp builds in use can do ---------------------------------------------------
def require() -> None:
    """The engine is installed, or a UserError that says how to install it."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        raise UserError("serving needs llama.cpp's server (the xllamacpp package); run "
                        "`pip install 'ssd-local[llama]'` (or `make setup`)")


def devices() -> list[dict[str, Any]]:
    """xllamacpp's devices: [{name, description, kind ("CPU", "GPU", "IGPU", ...),
    memory_free, memory_total}]."""
    require()
    import xllamacpp as xlc

    return [{"name": d["name"], "description": d["description"],
             "kind": str(d["type"].name).rsplit("_", 1)[-1], "memory_free": d["memory_free"],
             "memory_total": d["memory_total"]} for d in xlc.get_device_info()]


def gpus() -> list[dict[str, Any]]:
    """The devices a model can be offloaded to (empty: a CPU-only build)."""
    return [d for d in devices() if d["kind"] in ("GPU", "IGPU")]


if __name__ == "__main__":
    _child()
