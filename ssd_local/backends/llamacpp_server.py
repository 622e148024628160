"""The HTTP serving engine: llama-cpp-python's OpenAI-compatible server app under uvicorn,
either in a thread of this process that ``stop()`` ends (the TUI), or in the main thread
until Ctrl-C (``run_forever()``, the CLI).

A request that sets no sampling gets the given defaults (the run's T_eval/top-k/top-p),
with min-p and the repetition penalty switched off: the paper decodes with temperature
and truncation only."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

SAMPLING_PATHS = ("/v1/chat/completions", "/v1/completions")
NEUTRAL = {"min_p": 0.0, "repeat_penalty": 1.0}


class DecodingDefaults:
    """ASGI middleware: fills sampling fields a request leaves out with the defaults."""

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


def build_app(model_path: str, model_id: str, *, host: str, port: int, api_key: str | None,
              n_ctx: int, threads: int | None, defaults: dict[str, float]) -> Any:
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from .llamacpp import quiet_logs

    quiet_logs()
    # Concurrent clients queue; llama-cpp-python's default lets a new request cut off
    # the one streaming (an editor's completion would kill an agent's answer).
    server = ServerSettings(host=host, port=port, api_key=api_key, interrupt_requests=False)
    n = threads or os.cpu_count() or 1
    model = ModelSettings(model=model_path, model_alias=model_id, n_ctx=n_ctx, n_gpu_layers=-1,
                          n_threads=n, n_threads_batch=n, verbose=False)
    return DecodingDefaults(create_app(server_settings=server, model_settings=[model]),
                            {**defaults, **NEUTRAL})


class LlamaCppPyServer:
    """One server: ``start()`` loads the model and returns once it answers."""

    def __init__(self, model_path: str, model_id: str, *, host: str, port: int,
                 api_key: str | None, n_ctx: int, threads: int | None,
                 defaults: dict[str, float]):
        self._args = (model_path, model_id)
        self._kw = dict(host=host, port=port, api_key=api_key, n_ctx=n_ctx, threads=threads,
                        defaults=defaults)
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _make(self) -> Any:
        import uvicorn

        config = uvicorn.Config(build_app(*self._args, **self._kw), host=self.host,
                                port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        return self._server

    def run_forever(self) -> None:
        """Serve in this (main) thread until Ctrl-C or SIGTERM; uvicorn shuts down cleanly,
        then re-raises the signal it caught, which ends here (as ``uvicorn.run`` does)."""
        try:
            self._make().run()
        except KeyboardInterrupt:
            pass

    def start(self, timeout_s: float = 120.0) -> None:
        self._make()
        self._thread = threading.Thread(target=self._server.run, name="ssd-serve",
                                        daemon=True)
        self._thread.start()
        waited = threading.Event()
        left = timeout_s
        while not self._server.started and self._thread.is_alive() and left > 0:
            waited.wait(0.05)
            left -= 0.05
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the server did not start on {self.host}:{self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
