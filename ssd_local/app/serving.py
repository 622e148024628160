"""Serve a run's GGUF (or any GGUF) as an OpenAI-compatible API (``/v1/models``,
``/v1/chat/completions``, ``/v1/completions``, SSE streaming), with the run's name as the
model id. The CLI and the TUI both go through :class:`ServerHandle`: ``start()`` (returns
once requests are answered), ``stop()``, ``running``; or ``run_forever()`` until Ctrl-C.

A request that sets no sampling gets the run's recommended decoding, with min-p and
repetition penalty off (the paper decodes with temperature and truncation only).
Binding to anything but loopback requires an API key."""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ServeConfig, field_defaults
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

    @property
    def model_id(self) -> str:
        return self.plan.model_id

    @property
    def base_url(self) -> str:
        return self.snippets["base_url"]

    def _server(self) -> Any:
        from ..backends.llamacpp_server import LlamaCppPyServer

        check_bind(self.cfg)
        c = self.cfg
        return LlamaCppPyServer(str(self.plan.path), self.plan.model_id, host=c.host,
                                port=c.port, api_key=c.api_key, n_ctx=c.n_ctx,
                                threads=c.threads, defaults=self.plan.decoding.decoding.as_dict())

    def start(self) -> str:
        """Load the model and listen; returns the base URL once requests are answered."""
        engine = self._server()
        engine.start()  # raises when the model does not load or the port is taken
        self._engine = engine
        return self.base_url

    def run_forever(self) -> None:
        """Blocking: serve until Ctrl-C (a clean shutdown on SIGINT/SIGTERM)."""
        self._engine = self._server()
        self._engine.run_forever()

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    @property
    def running(self) -> bool:
        return self._engine is not None and self._engine.running


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
