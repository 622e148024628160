"""The core's one way to an engine: a model reference and a stage's generation options in,
a ``SamplingEngine`` out. Local engines come from the backend registry; ``--endpoint``
gives the served engine, whose prompts are rendered here with the served model's own
tokenizer (only the tokenizer is needed: a GGUF is opened vocabulary-only, a hub model is
fetched without its weights), so every stored ``prompt_text`` is what training rebuilds."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import choose_sampling_backend, is_available
from ..backends.base import SamplingEngine
from ..backends.endpoint import EndpointEngine
from ..backends.registry import open_sampler, open_tokenizer, samplers
from ..config import Generation
from ..errors import UserError
from ..events import OnEvent, Warning, ignore
from . import models

PROBE = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Write a Python function that adds two numbers."}]


def open_local(model: models.ModelRef, backend: str | None,
               on_event: OnEvent = ignore) -> SamplingEngine:
    """The engine ``backend`` names (or the automatic choice), on ``model``; a GGUF is
    converted once for engines that load transformers folders."""
    name = choose_sampling_backend(model.kind, backend)
    kinds = samplers()[name].model_kinds
    if model.kind in kinds:
        return open_sampler(name, model.path)
    if "gguf" in kinds:
        raise UserError(f"the {name} backend samples GGUF models; use --backend torch for "
                        "a Hugging Face folder, or pass a .gguf file")
    if not is_available("torch"):
        raise UserError(f"the {name} backend needs a transformers folder, and converting this "
                        "GGUF needs torch: `pip install 'ssd-local[torch]'`, or pass an "
                        "HF folder or hub id, or use --backend llamacpp")
    return open_sampler(name, models.ensure_hf_folder(model, on_event))


@dataclass(frozen=True)
class Served:
    engine: EndpointEngine
    template_mismatch: tuple[int, int] | None  # (server's prompt tokens, ours) in chat mode


def open_endpoint(model: models.ModelRef | None, url: str, *, api_key: str | None,
                  chat: bool, on_event: OnEvent = ignore) -> Served:
    """The served engine, rendering with ``model``'s tokenizer. In chat mode the server
    renders; a probe compares its prompt token count with ours and warns on a mismatch."""
    if model is None and not chat:
        raise UserError("--endpoint without a model renders nothing locally; name the "
                        "model the server holds, or pass --chat to let the server apply "
                        "its template")
    tok = open_tokenizer(model.kind, model.path) if model is not None else None
    if tok is not None:
        tok.render(PROBE)  # no chat template: say so now, not at the first request
    try:
        engine = EndpointEngine(url, api_key=api_key, chat=chat, tokenizer=tok)
    except BaseException:
        if tok is not None:
            tok.close()
        raise
    mismatch = engine.probe_template(PROBE) if chat and tok is not None else None
    if mismatch and model is not None:
        theirs, ours = mismatch
        on_event(Warning(f"the server renders chats differently from {model.name}'s own "
                         f"template ({theirs} prompt tokens against our {ours}); training "
                         "rebuilds our rendering, so drop --chat to sample on exactly that "
                         "text"))
    return Served(engine, mismatch)


def open_for(model: models.ModelRef | None, opts: Generation, *, chat: bool | None = None,
             on_event: OnEvent = ignore) -> SamplingEngine:
    """The engine a generating stage asked for: its endpoint, else a local one."""
    if opts.endpoint:
        return open_endpoint(model, opts.endpoint, api_key=opts.api_key,
                             chat=opts.chat if chat is None else chat,
                             on_event=on_event).engine
    if model is None:
        raise UserError("name a model to generate with, or pass --endpoint URL")
    return open_local(model, opts.backend, on_event)
