"""Whether a GGUF's chat template can take ``tools``, and a template that refuses them.

llama.cpp's server renders ``tools`` through the model's chat template and parses the tool
calls the model writes back; a template that never reads ``tools`` (SmolLM2's ChatML) makes
it answer such a request as if no tools had been sent, silently. We never let that happen:
a model whose template has no tools is served with its own template behind one guard,
``{% if tools %}{{ raise_exception(...) }}{% endif %}``, so the engine itself answers any
request that carries tools with HTTP 400 (``invalid_request_error``) whose message names
tools, and renders everything else exactly as before. No proxy sits in front of the
engine for this.

The check is llama.cpp's own idea, done before the model loads: render the template with
one probe tool and see whether its name comes out. The server reports the same fact in
``/props`` (``chat_template_caps.supports_tools``); the engine's child checks that the
two agree once it is up (``llama_server``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROBE_NAME = "zz_ssd_local_probe_tool"
TEMPLATE_KEY = "tokenizer.chat_template"
# llama.cpp's fallback when a GGUF carries no template (its "chatml"), written out so it
# can be guarded like any other
CHATML = ("{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] "
          "+ '<|im_end|>\\n' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def templates_of(path: Path) -> dict[str, str]:
    """The GGUF's chat templates: the default one and named variants (``tool_use``)."""
    from .gguf_shape import read_header

    meta, _ = read_header(path)
    return {k: v for k, v in meta.items()
            if isinstance(v, str) and (k == TEMPLATE_KEY or k.startswith(TEMPLATE_KEY + "."))}


def renders_tools(template: str) -> bool:
    """True when ``template`` puts a tool it is given into the prompt (a template that
    fails to render with one counts as not taking tools)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "2026-01-01")
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                   ensure_ascii=False)
    tool = {"type": "function", "function": {
        "name": PROBE_NAME, "description": "probe",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
    try:
        text = env.from_string(template).render(
            messages=[{"role": "user", "content": "hi"}], tools=[tool],
            add_generation_prompt=True, bos_token="", eos_token="")
    except Exception:  # jinja2 errors of any kind, or the template's own raise
        return False
    return PROBE_NAME in text


def supports_tools(path: Path) -> bool:
    """Any of the GGUF's templates takes tools (llama.cpp uses ``tool_use`` for them)."""
    return any(renders_tools(t) for t in templates_of(path).values())


def refusing_template(path: Path, model_id: str) -> str:
    """The GGUF's own template behind a guard that refuses requests with tools."""
    base = templates_of(path).get(TEMPLATE_KEY) or CHATML
    name = model_id.replace('"', "'").replace("\\", "/")  # kept inside a jinja string
    message = (f"tools are not supported: the chat template of {name} does not render "
               "tools, so the model would never see them; send the request without tools "
               "(and tool_choice), or serve a model whose template supports tool calls")
    return "{%- if tools %}{{- raise_exception(" + json.dumps(message) + ") }}{%- endif %}" \
        + base


def caps_of(props: dict[str, Any]) -> bool | None:
    """``/props``' word on tools, when it gives one."""
    caps = props.get("chat_template_caps")
    return bool(caps.get("supports_tools")) if isinstance(caps, dict) else None
