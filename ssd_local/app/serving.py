"""Serve a run's GGUF (or any GGUF) through llama.cpp: an OpenAI-compatible API
(``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, SSE streaming) from
llama-cpp-python's server, with the run's name as the model id.

A request that sets no sampling gets the run's recommended T_eval/top-k/top-p, with min-p
and repetition penalty off (the paper decodes with temperature and truncation only).
Binding to anything but loopback requires an API key."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .config import PRESETS, Decoding, ServeConfig, detect_preset
from .errors import UserError
from .runs import Run, runs_root

SAMPLING_PATHS = ("/v1/chat/completions", "/v1/completions")


@dataclass(frozen=True)
class ServePlan:
    path: Path
    model_id: str
    decoding: Decoding
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
        d = run.manifest.get("recommended_decoding") or {}
        preset = run.manifest.get("config", {}).get("sample", {}).get("preset") or "generic"
        dec = Decoding(d["temperature"], d["top_k"], d["top_p"]) if d \
            else PRESETS[preset].eval
        return ServePlan(ggufs[q], run.name, dec, "run", ggufs)
    m = models.resolve(target)
    if m.kind != "gguf":
        raise UserError(f"'{target}' is not a GGUF model or a run with GGUFs; serve a .gguf "
                        "file, smollm2-135m, or a distilled run")
    return ServePlan(m.path, m.name, PRESETS[detect_preset(m.name)].base, "model")


def check_bind(cfg: ServeConfig) -> None:
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(cfg.host)).is_loopback
    except (OSError, ValueError):
        raise UserError(f"cannot resolve --host {cfg.host}; use 127.0.0.1") from None
    if not loopback and not cfg.api_key:
        raise UserError(f"binding to {cfg.host} exposes the model beyond this machine; add "
                        "--api-key KEY (clients send it as a Bearer token) or use 127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((cfg.host, cfg.port))
        except OSError:
            raise UserError(f"port {cfg.port} on {cfg.host} is in use; pick another with "
                            "--port") from None


def client_snippets(p: ServePlan, cfg: ServeConfig) -> dict[str, str]:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base = f"http://{host}:{cfg.port}/v1"
    key = cfg.api_key or "none"
    d = p.decoding
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


class DecodingDefaults:
    """ASGI middleware: fills sampling fields a request leaves out with the run's
    recommended decoding (and switches min-p / repetition penalty off)."""

    def __init__(self, app: Any, defaults: dict[str, float]):
        self.app = app
        self.defaults = defaults

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" \
                or scope.get("path") not in SAMPLING_PATHS:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                for k, v in self.defaults.items():
                    if data.get(k) is None:
                        data[k] = v
                body = json.dumps(data).encode()
        except ValueError:
            pass  # the server answers malformed JSON itself
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app(dict(scope, headers=headers), replay, send)


def build_app(p: ServePlan, cfg: ServeConfig) -> Any:
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from ..backends.llamacpp import quiet_logs

    quiet_logs()
    # Concurrent clients queue; llama-cpp-python's default lets a new request cut off
    # the one streaming (an editor's completion would kill an agent's answer).
    server = ServerSettings(host=cfg.host, port=cfg.port, api_key=cfg.api_key,
                            interrupt_requests=False)
    model = ModelSettings(model=str(p.path), model_alias=p.model_id, n_ctx=cfg.n_ctx,
                          n_gpu_layers=-1, n_threads=cfg.threads or os.cpu_count() or 1,
                          n_threads_batch=cfg.threads or os.cpu_count() or 1, verbose=False)
    d = p.decoding
    defaults = {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
                "min_p": 0.0, "repeat_penalty": 1.0}
    return DecodingDefaults(create_app(server_settings=server, model_settings=[model]),
                            defaults)


def serve(p: ServePlan, cfg: ServeConfig) -> None:
    """Blocking: serve until Ctrl-C (uvicorn shuts down cleanly on SIGINT/SIGTERM)."""
    import uvicorn

    check_bind(cfg)
    uvicorn.run(build_app(p, cfg), host=cfg.host, port=cfg.port, log_level="warning")


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
