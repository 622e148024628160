"""An OpenAI-compatible server as an engine: vLLM, SGLang, llama.cpp's ``llama-server``, or
``ssd-local serve``, on this machine or a cluster.

By default every request goes to ``/v1/completions`` with the prompt rendered by *our* chat
template and system message, so a sample is conditioned on exactly the text training
rebuilds. ``chat=True`` sends ``/v1/chat/completions`` instead and the server applies its own
template; a probe compares its prompt token count with our rendering and warns on a mismatch.

Decoding goes as the run says: temperature, top_p, and ``top_k`` as an extra body field
(vLLM and llama.cpp read it), with min-p and repetition penalty switched off for servers
that default them on, plus max tokens and one seed per request. Requests run on an asyncio
loop with bounded concurrency; 429, 5xx, dropped connections and timeouts are retried with
exponential backoff and jitter. A request that still fails is reported by prompt id at the
end; nothing is dropped silently, and the samples that did finish are already stored.
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from ..errors import UserError
from .base import (DEFAULT_BATCH, EngineStats, GenerationRequest, GenerationResult, Messages,
                   SamplingParams, Tokenizer)

# Sampling fields that switch off llama.cpp servers' extra samplers (vLLM's defaults are
# already off; it ignores the llama.cpp names).
NEUTRAL = {"min_p": 0.0, "repeat_penalty": 1.0}


class EndpointEngine:
    name = "endpoint"
    RETRIES = 6  # per request, after the first try
    BACKOFF_S = 0.5  # first delay; doubles per retry (capped at 20 s), with jitter

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 chat: bool = False, tokenizer: Tokenizer | None = None,
                 timeout_s: float = 600.0):
        """``tokenizer``: the served model's own (our rendering); the engine closes it.
        Without one only chat mode works (the server renders)."""
        import openai

        if not chat and tokenizer is None:
            raise ValueError("completions mode needs our chat template (a tokenizer)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or "none"
        self.chat = chat
        self.tokenizer = tokenizer
        self.timeout_s = timeout_s
        self.retries = self.RETRIES
        self.backoff_s = self.BACKOFF_S
        self._stats = EngineStats()
        self._messages: dict[str, list[dict[str, str]]] = {}
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=30.0,
                               max_retries=2)
        try:
            served = [m.id for m in client.models.list().data]
        except openai.APIConnectionError:
            raise UserError(f"no server answers at {self.base_url}; start one (e.g. "
                            "`ssd-local serve MODEL`, vLLM or llama-server) or fix --endpoint") \
                from None
        except openai.AuthenticationError:
            raise UserError(f"{self.base_url} refused the API key; pass the server's key "
                            "with --api-key") from None
        except openai.APIError as exc:
            raise UserError(f"{self.base_url}/models failed ({exc}); is it an "
                            "OpenAI-compatible /v1 endpoint?") from None
        finally:
            client.close()
        if model is not None and model not in served:
            raise UserError(f"{self.base_url} serves {', '.join(served) or 'no model'}, not "
                            f"'{model}'")
        if model is None and not served:
            raise UserError(f"{self.base_url} lists no model")
        self.model = model or served[0]

    # -- the engine protocol -----------------------------------------------------------------
    def render(self, messages: Messages) -> str:
        """Our rendering (what the run stores and training rebuilds). In chat mode the
        messages travel as they are and the server renders them."""
        text = self.tokenizer.render(messages) if self.tokenizer else json.dumps(messages)
        if self.chat:
            self._messages[text] = messages
        return text

    def context_length(self) -> int:
        return 0  # the server enforces its own

    def stats(self) -> EngineStats:
        return self._stats

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *,
                 batch_size: int = DEFAULT_BATCH, cancel: threading.Event | None = None
                 ) -> Iterator[GenerationResult]:
        """``batch_size`` requests in flight; results as they finish. Failures are raised
        together at the end, after every other result has been yielded."""
        out: queue.Queue = queue.Queue()
        done = object()
        stop = threading.Event()  # set when the consumer leaves early

        def stopped() -> bool:
            return stop.is_set() or (cancel is not None and cancel.is_set())

        loop_thread = threading.Thread(
            target=lambda: asyncio.run(self._run_all(list(requests), params, batch_size,
                                                     stopped, out, done)),
            name="ssd-endpoint", daemon=True)
        loop_thread.start()
        try:
            while True:
                item = out.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            loop_thread.join(timeout=self.timeout_s)
        failed = self._stats.failed
        if failed:
            shown = "; ".join(failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise UserError(f"{len(failed)} request(s) to {self.base_url} failed "
                            f"after {self.retries} retries: {shown}{more}; the other samples are "
                            "stored, rerun the same command to retry these")

    def close(self) -> None:
        self._messages.clear()
        if self.tokenizer is not None:
            self.tokenizer.close()
            self.tokenizer = None

    # -- the asyncio side ----------------------------------------------------------------------
    async def _run_all(self, reqs: list[GenerationRequest], params: SamplingParams,
                       concurrency: int, stopped: Callable[[], bool], out: queue.Queue,
                       done: object) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                    timeout=self.timeout_s, max_retries=0)
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(req: GenerationRequest) -> None:
            async with sem:
                if stopped():
                    return
                self._stats.in_flight += 1
                self._stats.peak_in_flight = max(self._stats.peak_in_flight,
                                                 self._stats.in_flight)
                try:
                    out.put(await self._with_retries(client, req, params, stopped))
                except _GaveUp as exc:
                    self._stats.failed.append(f"{req.key[0]}#{req.key[1]}: {exc}")
                except BaseException as exc:  # a bug or a bad answer: surface it
                    out.put(exc)
                finally:
                    self._stats.in_flight -= 1

        try:
            await asyncio.gather(*(one(r) for r in reqs))
        finally:
            await client.close()
            out.put(done)

    async def _with_retries(self, client: Any, req: GenerationRequest, params: SamplingParams,
                            stopped: Callable[[], bool]) -> GenerationResult:
        import openai

        attempt = 0
        while True:
            try:
                self._stats.requests += 1
                return await self._once(client, req, params)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                    openai.APITimeoutError) as exc:
                reason = _reason(exc)
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    raise _GaveUp(f"HTTP {exc.status_code}: {_short(exc)}") from None
                reason = f"HTTP {exc.status_code}"
            if attempt >= self.retries or stopped():
                raise _GaveUp(reason)
            attempt += 1
            self._stats.retries += 1
            self._stats.retry_reasons[reason] = self._stats.retry_reasons.get(reason, 0) + 1
            delay = min(self.backoff_s * 2 ** (attempt - 1), 20.0)
            await asyncio.sleep(delay * (0.5 + random.random()))

    async def _once(self, client: Any, req: GenerationRequest,
                    params: SamplingParams) -> GenerationResult:
        extra: dict[str, Any] = dict(NEUTRAL)
        if params.top_k:
            extra["top_k"] = params.top_k
        common = dict(model=self.model, temperature=params.temperature, top_p=params.top_p,
                      max_tokens=params.max_new_tokens, seed=req.seed, extra_body=extra)
        if self.chat:
            r = await client.chat.completions.create(
                messages=self._messages.get(req.prompt_text) or json.loads(req.prompt_text),
                **common)
            text = r.choices[0].message.content or ""
        else:
            r = await client.completions.create(prompt=req.prompt_text, **common)
            text = r.choices[0].text or ""
        finish = r.choices[0].finish_reason
        usage = r.usage
        return GenerationResult(req.key, text, usage.prompt_tokens if usage else 0,
                                usage.completion_tokens if usage else 0,
                                "length" if finish == "length" else "stop")

    # -- chat-mode probe -----------------------------------------------------------------------
    def probe_template(self, messages: Messages) -> tuple[int, int] | None:
        """(server's prompt tokens, ours) for one chat request; None when they agree."""
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=120.0,
                               max_retries=2)
        try:
            r = client.chat.completions.create(model=self.model, messages=messages,
                                               max_tokens=1, temperature=0.0)
        finally:
            client.close()
        theirs = r.usage.prompt_tokens if r.usage else None
        ours = len(self.tokenizer.encode(self.tokenizer.render(messages))) \
            if self.tokenizer else None
        if theirs is None or ours is None or theirs == ours:
            return None
        return theirs, ours


class _GaveUp(Exception):
    pass


def _reason(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection dropped"
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _short(exc: Exception) -> str:
    return str(exc).replace("\n", " ")[:160]


def wait_until_up(url: str, timeout_s: float = 120.0) -> bool:
    """Poll ``URL/models`` until the server answers (any HTTP status but 503, which
    llama.cpp's server and others send while the model loads) or time runs out."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return True
            time.sleep(0.3)
        except OSError:
            time.sleep(0.3)
    return False
