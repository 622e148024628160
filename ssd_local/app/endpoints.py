"""Driving a served engine (vLLM, llama-server, ``ssd-local serve``) for sampling and
evaluation: our chat template on this side, the weights on the server's.

``MODEL`` still names the model the server holds: its tokenizer renders prompts here (only
the tokenizer is needed: a GGUF is opened vocabulary-only, a hub model is fetched without
its weights), so every stored ``prompt_text`` is exactly what training rebuilds.
"""

from __future__ import annotations

from typing import Any, Callable

from . import models
from .errors import UserError
from .events import OnEvent, Warning, ignore

PROBE = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Write a Python function that adds two numbers."}]


def local_template(model: models.ModelRef) -> tuple[Callable[[list[dict]], str],
                                                     Callable[[str], int], Any]:
    """(render, count_tokens, handle to close) from the model's own tokenizer."""
    if model.kind == "gguf":
        from ..backends.llamacpp import LlamaCppEngine

        eng = LlamaCppEngine(model.path, vocab_only=True)
        return eng.render, lambda text: len(eng.tokenize(text)), eng
    from transformers import AutoTokenizer

    from ..backends.base import render_chat

    tok = AutoTokenizer.from_pretrained(str(model.path))

    def render(messages: list[dict]) -> str:
        return render_chat(tok, messages)

    render(PROBE)  # no chat template: say so now, not at the first request
    return render, lambda text: len(tok(text, add_special_tokens=False)["input_ids"]), None


class EndpointSession:
    """The endpoint engine plus the local tokenizer it renders with; closes both."""

    def __init__(self, model: models.ModelRef | None, url: str, *, api_key: str | None,
                 chat: bool, on_event: OnEvent = ignore):
        from ..backends.endpoint import EndpointEngine

        self._handle = None
        render = count = None
        if model is not None:
            render, count, self._handle = local_template(model)
        elif not chat:
            raise UserError("--endpoint without a model renders nothing locally; name the "
                            "model the server holds, or pass --chat to let the server apply "
                            "its template")
        self.engine = EndpointEngine(url, api_key=api_key, chat=chat, renderer=render)
        self.name = self.engine.name
        self.template_mismatch: tuple[int, int] | None = None
        if chat and count is not None:
            self.template_mismatch = self.engine.probe_template(PROBE, count)
            if self.template_mismatch:
                theirs, ours = self.template_mismatch
                on_event(Warning(f"the server renders chats differently from {model.name}'s "
                                 f"own template ({theirs} prompt tokens against our {ours}); "
                                 "training rebuilds our rendering, so drop --chat to sample "
                                 "on exactly that text"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def close(self) -> None:
        self.engine.close()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
