"""An OpenAI-compatible server as an engine (``ssd-local serve``, llama-server, vLLM).

The server applies the model's own chat template, so a request carries the chat messages;
``render`` returns them as JSON and that JSON is what the run stores as the prompt. Decoding
goes as the run says: temperature, top_p, and ``top_k`` as an extra body field (llama.cpp
and vLLM read it), plus max tokens and a per-request seed.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Iterator, Sequence

from ..app.errors import UserError
from .base import GenerationRequest, GenerationResult, SamplingParams


class EndpointEngine:
    name = "endpoint"

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 600.0, max_retries: int = 4):
        import openai

        self.base_url = base_url.rstrip("/")
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none",
                                    timeout=timeout_s, max_retries=max_retries)
        try:
            served = [m.id for m in self.client.models.list().data]
        except openai.APIConnectionError:
            raise UserError(f"no server answers at {self.base_url}; start one (e.g. "
                            "`ssd-local serve MODEL`) or fix --endpoint") from None
        except openai.AuthenticationError:
            raise UserError(f"{self.base_url} refused the API key; pass the server's key "
                            "with --api-key") from None
        except openai.APIError as exc:
            raise UserError(f"{self.base_url}/models failed ({exc}); is it an "
                            "OpenAI-compatible /v1 endpoint?") from None
        if model is not None and model not in served:
            raise UserError(f"{self.base_url} serves {', '.join(served) or 'no model'}, not "
                            f"'{model}'")
        if model is None and not served:
            raise UserError(f"{self.base_url} lists no model")
        self.model = model or served[0]

    def render(self, messages: list[dict[str, str]]) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def context_length(self) -> int:
        return 0  # unknown: the server enforces its own

    def _one(self, req: GenerationRequest, params: SamplingParams) -> GenerationResult:
        extra: dict[str, Any] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        r = self.client.chat.completions.create(
            model=self.model, messages=json.loads(req.prompt_text),
            temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, seed=req.seed, extra_body=extra or None)
        choice = r.choices[0]
        usage = r.usage
        return GenerationResult(req.key, choice.message.content or "",
                                usage.prompt_tokens if usage else 0,
                                usage.completion_tokens if usage else 0,
                                "length" if choice.finish_reason == "length" else "stop")

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        """``batch_size`` requests in flight; results as they finish."""
        todo = list(requests)[::-1]
        with ThreadPoolExecutor(max_workers=batch_size) as pool:
            running: set[Future] = set()
            while todo or running:
                while todo and len(running) < batch_size and not (cancel and cancel.is_set()):
                    req = todo.pop()
                    fut = pool.submit(self._one, req, params)
                    fut.key = req.key  # type: ignore[attr-defined]
                    running.add(fut)
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    yield self._result(f)

    def _result(self, f: Future) -> GenerationResult:
        import openai

        try:
            return f.result()
        except openai.APIError as exc:
            key = getattr(f, "key", None)
            raise UserError(f"{self.base_url}: the request for {key[0] if key else 'a prompt'} "
                            f"failed after retries ({type(exc).__name__}: {exc}); check the "
                            "server and rerun to resume") from None

    def close(self) -> None:
        self.client.close()
