"""Serve a run's GGUF (or any GGUF) as an OpenAI-compatible API (``/v1/models``,
``/v1/chat/completions``, ``/v1/completions``, SSE streaming, tool calls, ``/health``,
``/metrics``), with the run's name as the model id. The engine is llama.cpp's own server
(``backends.llama_server``, in a child process): parallel slots with continuous batching,
a prompt cache per slot. The CLI and the TUI both go through :class:`ServerHandle`:
``start()`` (returns once requests are answered), ``stop()`` (returns once the port is
free), ``running``, ``stats()`` (busy slots and tok/s from ``/metrics``); or
``run_forever()`` until Ctrl-C.

A request that sets no sampling gets the run's decoding (``decoding.tuned``: T_eval,
top-k, top-p) in the paper's order, temperature then top-k then top-p, with min-p and the
penalties off; a request's own values win. Slots, GPU layers and the refusal of tools a
template cannot take are decided in ``serve_engine``. Binding to anything but loopback
requires an API key."""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..config import ServeConfig, field_defaults
from ..config.paths import home
from ..errors import UserError
from . import decoding, models
from .runs import Run, runs_root


@dataclass(frozen=True)
class ServePlan:
    path: Path
    model_id: str
    decoding: decoding.Chosen
    source: str  # "run" | "model"
    others: dict[str, Path] = field(default_factory=dict)  # the run's other GGUFs


def plan(target: str, quant: str | None = None) -> ServePlan:
    """What to serve: a run's GGUF (``--quant``, default the smallest), or a GGUF model."""
    from .export import run_ggufs

    if (runs_root() / target / "manifest.json").exists():
        run = Run.load(target)
        ggufs = run_ggufs(run)
        if not ggufs:
            raise UserError(f"run '{run.name}' has no GGUF yet; run `ssd-local export "
                            f"{run.name}` (or `ssd-local distill`) first")
        if quant and quant not in ggufs:
            raise UserError(f"run '{run.name}' has no {quant} GGUF; it has: "
                            + ", ".join(sorted(ggufs)))
        q = quant or min(ggufs, key=lambda k: ggufs[k].stat().st_size)
        return ServePlan(ggufs[q], run.name, decoding.tuned(run), "run", ggufs)
    m = models.resolve(target)
    if m.kind != "gguf":
        raise UserError(f"'{target}' is not a GGUF model or a run with GGUFs; serve a .gguf "
                        "file, smollm2-135m, or a distilled run")
    return ServePlan(m.path, m.name, decoding.base(m), "model")


LOOPBACK: str = field_defaults(ServeConfig)["host"]


def check_bind(cfg: ServeConfig) -> None:
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(cfg.host)).is_loopback
    except (OSError, ValueError):
        raise UserError(f"cannot resolve --host {cfg.host}; use {LOOPBACK}") from None
    if not loopback and not cfg.api_key:
        raise UserError(f"binding to {cfg.host} exposes the model beyond this machine; add "
                        f"--api-key KEY (clients send it as a Bearer token) or use {LOOPBACK}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as llama.cpp's server binds: connections of a stopped server that linger in
        # TIME_WAIT do not block the port, a live listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((cfg.host, cfg.port))
        except OSError:
            raise UserError(f"port {cfg.port} on {cfg.host} is in use; pick another with "
                            "--port") from None


def client_snippets(p: ServePlan, cfg: ServeConfig) -> dict[str, str]:
    base = cfg.base_url
    key = cfg.api_key or "none"
    d = p.decoding.decoding
    python = (f'from openai import OpenAI\n'
              f'client = OpenAI(base_url="{base}", api_key="{key}")\n'
              f'r = client.chat.completions.create(model="{p.model_id}", messages=[\n'
              f'    {{"role": "user", "content": "Write a Python function that reverses a '
              f'string."}}])\n'
              f'print(r.choices[0].message.content)')
    editor = json.dumps({"models": [{"title": p.model_id, "provider": "openai",
                                     "model": p.model_id, "apiBase": base, "apiKey": key,
                                     "completionOptions": {"temperature": d.temperature,
                                                           "topK": d.top_k, "topP": d.top_p}}]},
                        indent=2)
    env = f"OPENAI_BASE_URL={base}\nOPENAI_API_KEY={key}\nOPENAI_MODEL={p.model_id}"
    return {"base_url": base, "openai-python": python, "editor (OpenAI-compatible)": editor,
            "agents (environment)": env}


class ServerHandle:
    """One endpoint for ``target`` (a run or a GGUF): plan, bind check, the engine."""

    def __init__(self, target: str, cfg: ServeConfig):
        self.target, self.cfg = target, cfg
        self.plan = plan(target, cfg.quant)
        self.snippets = client_snippets(self.plan, cfg)
        self._engine: Any = None
        self._layout: Any = None
        self._stats: Any = None

    @property
    def model_id(self) -> str:
        return self.plan.model_id

    @property
    def base_url(self) -> str:
        return self.snippets["base_url"]

    @property
    def layout(self) -> Any:
        """The engine's slots, GPU layers and tool support here (``serve_engine.Layout``);
        the first read imports the engine (a UI reads it off its event loop)."""
        if self._layout is None:
            from .serve_engine import layout

            self._layout = layout(self.plan.path, self.cfg)
        return self._layout

    def _spec(self, refuse_tools: bool) -> Any:
        from ..backends import chat_tools
        from ..backends.llama_server import EngineSpec

        c, lay, d = self.cfg, self.layout, self.plan.decoding.decoding
        logs = (runs_root() / self.model_id / "logs" if self.plan.source == "run"
                else home() / "logs")
        return EngineSpec(
            str(self.plan.path), self.model_id, c.host, c.port, c.api_key, c.n_ctx,
            lay.slots, lay.threads, lay.gpu_layers, d.temperature, d.top_k, d.top_p,
            lay.cache_ram_mib, str(logs / f"serve-{self.model_id}.log"),
            chat_tools.refusing_template(self.plan.path, self.model_id) if refuse_tools
            else None)

    def start(self) -> str:
        """Load the model and listen; returns the base URL once requests are answered."""
        from ..backends import chat_tools
        from ..backends.llama_server import LlamaServer
        from .serve_engine import StatsReader

        check_bind(self.cfg)
        refuse = not self.layout.tools
        engine = LlamaServer(self._spec(refuse))
        props = engine.start()  # raises UserError when the model does not load
        if not refuse and chat_tools.caps_of(props) is False:
            # llama.cpp's own probe found no tools where ours did: refuse them after all
            engine.stop()
            engine = LlamaServer(self._spec(True))
            engine.start()
            self._layout = replace(self._layout, tools=False)
        self._engine, self._stats = engine, StatsReader(self.layout.slots)
        return self.base_url

    def run_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Blocking: serve until Ctrl-C or SIGTERM, then stop cleanly; ``on_ready`` is
        called once the model is loaded (until then the engine answers 503)."""
        from ..backends.llama_server import sigterm_as_interrupt

        with sigterm_as_interrupt():
            try:
                self.start()
                if on_ready is not None:
                    on_ready()
                status = self._engine.wait()
                raise UserError(f"llama.cpp's server ended on its own (status {status})"
                                + self._engine.log_tail())
            except KeyboardInterrupt:
                pass
            finally:
                self.stop()

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    @property
    def running(self) -> bool:
        return self._engine is not None and self._engine.running

    def stats(self) -> Any:
        """Busy slots and tok/s now (``serve_engine.ServeStats``); None when not serving."""
        engine, reader = self._engine, self._stats
        if engine is None or reader is None or not engine.running:
            return None
        try:
            return reader.read(engine.metrics())
        except (OSError, ValueError):
            return None


def servable() -> list[tuple[str, str, str]]:
    """(name, kind, detail) for everything ``serve`` takes: runs with GGUFs, the default."""
    from .export import run_ggufs
    from .runs import list_runs

    out = []
    if models.embedded_path("smollm2-135m") is not None:
        out.append(("smollm2-135m", "embedded", "SmolLM2-135M-Instruct Q4_1 (base model)"))
    for r in list_runs():
        ggufs = run_ggufs(Run.load(r.name))
        if ggufs:
            sizes = ", ".join(f"{q} {p.stat().st_size / 2**20:.0f} MB"
                              for q, p in sorted(ggufs.items()))
            out.append((r.name, "run", f"{r.model} -> {sizes}"))
    return out
