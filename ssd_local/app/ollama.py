"""An Ollama Modelfile for a run's GGUF: FROM the file, the run's decoding as PARAMETERs,
and the chat template Ollama should use.

The template. Ollama's TEMPLATE is a Go template, not the GGUF's Jinja. Without a TEMPLATE,
``ollama create`` compares the GGUF's ``tokenizer.chat_template`` with the Jinja of its
built-in templates and takes the closest one when the edit distance is under 100
characters (``template.Named`` and ``detectChatTemplate`` in ollama/ollama); when none is
that close, Ollama before 0.30 sends the bare prompt (``{{ .Prompt }}``) and 0.30 and later
let llama-server render the GGUF's own template. A ChatML template with a tool block or a
long default system message (Qwen2.5, Qwen3) is not close to any built-in one, so leaving
TEMPLATE out is a gamble on the Ollama version. So:

- ChatML-family templates (SmolLM2, Qwen2.5, Qwen3, ...) get a written TEMPLATE, Ollama's
  own ``chatml.gotmpl`` (every message as ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``, then
  ``<|im_start|>assistant\\n``) and ChatML's stop tokens. It is written only after the GGUF's
  Jinja was rendered on three probe conversations (system + user; a multi-turn one; user
  only) and gave exactly ChatML, up to a constant tail after the assistant header (a
  thinking model's ``<think>\\n``, kept in the template). A default system message the Jinja
  injects when there is none becomes SYSTEM, so the two render the same.
- Any other template (Llama 3, Gemma, Mistral, ...) gets no TEMPLATE, with the reason in a
  comment: a hand-written Go template would be a guess, while Ollama's own detection (and
  from 0.30 the GGUF's own template) is right for the templates it knows. Its stop is the
  GGUF's end-of-turn token.

SYSTEM is the system message the run sampled, trained and was evaluated with (its decoding
was measured under it), else the template's own default. Decoding: ``decoding.tuned`` (the
measured best of ``compare``, else T_eval), ``min_p 0`` and ``repeat_penalty 1``, written out
because Ollama's defaults changed across versions (its repeat_penalty was 1.1) and the
paper decodes with temperature and truncation only. Ollama, like llama.cpp, truncates with top-k/top-p before
it applies the temperature; the paper's order is the reverse (see README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..backends.gguf_chat import GGUFChat, render
from ..errors import UserError
from .decoding import Chosen

START, END = "<|im_start|>", "<|im_end|>"
CHATML_STOPS = (START, END)
# Ollama's template/chatml.gotmpl (messages form), plus the assistant tail the Jinja adds.
GO_CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
             "{{ end }}<|im_start|>assistant\n")
_PROBES = {
    "system": [{"role": "system", "content": "Probe system message."},
               {"role": "user", "content": "Probe question?"}],
    "turns": [{"role": "system", "content": "Probe system message."},
              {"role": "user", "content": "First probe question?"},
              {"role": "assistant", "content": "First probe answer."},
              {"role": "user", "content": "Second probe question?"}],
    "user": [{"role": "user", "content": "Probe question?"}],
}
_SYSTEM_HEAD = re.compile(r"^<\|im_start\|>system\n(.*?)<\|im_end\|>\n", re.S)


@dataclass(frozen=True)
class TemplateChoice:
    go_template: str | None  # None: TEMPLATE left out
    stops: tuple[str, ...]
    default_system: str | None  # what the Jinja injects when a conversation has none
    reason: str  # in words, for the Modelfile's comment


def chatml(messages: list[dict[str, str]]) -> str:
    """ChatML with the generation prompt: what GO_CHATML renders for ``messages``."""
    return "".join(f"{START}{m['role']}\n{m['content']}{END}\n" for m in messages) + \
        f"{START}assistant\n"


def choose_template(chat: GGUFChat) -> TemplateChoice:
    """A Go TEMPLATE for a ChatML-family Jinja template, else none (module docstring)."""
    other = TemplateChoice(None, tuple(t for t in dict.fromkeys((chat.eot, chat.eos)) if t),
                           None, "")
    if not chat.template:
        return _other(other, "the GGUF has no chat template, so Ollama sends the bare prompt")
    if START not in chat.template:
        return _other(other, "the GGUF's chat template is not ChatML")
    try:
        got = {k: _strip_bos(render(chat, msgs), chat.bos) for k, msgs in _PROBES.items()}
    except Exception as exc:  # a template may raise on a role or a probe
        return _other(other, f"the GGUF's chat template fails on a probe conversation ({exc})")
    head = chatml(_PROBES["system"])
    tail = got["system"][len(head):]
    if not got["system"].startswith(head) or "{{" in tail or len(tail) > 64 \
            or got["turns"] != chatml(_PROBES["turns"]) + tail:
        return _other(other, "the GGUF's chat template renders differently from ChatML")
    default = None
    if got["user"] != chatml(_PROBES["user"]) + tail:
        m = _SYSTEM_HEAD.match(got["user"])
        if not m or got["user"] != chatml([{"role": "system", "content": m.group(1)},
                                           *_PROBES["user"]]) + tail:
            return _other(other, "the GGUF's chat template treats a conversation without a "
                                 "system message in a way ChatML cannot express")
        default = m.group(1)
    return TemplateChoice(GO_CHATML + tail, CHATML_STOPS, default,
                          "the GGUF's chat template is ChatML (checked by rendering it on "
                          "three probe conversations), written as Ollama's own ChatML Go "
                          "template, which every Ollama version then uses")


def _other(base: TemplateChoice, why: str) -> TemplateChoice:
    return TemplateChoice(None, base.stops, None,
                          f"{why}; TEMPLATE is left out: `ollama create` then uses its "
                          "built-in template closest to the GGUF's (when one is close), and "
                          "Ollama 0.30 and later otherwise render the GGUF's own template; "
                          "check with `ollama show NAME --template`")


def _strip_bos(text: str, bos: str) -> str:
    """``text`` without a leading BOS the template wrote (Ollama's own ChatML template
    writes none either; the tokenizer adds one when the GGUF asks for it), only when ChatML
    follows it: a GGUF may name ``<|im_start|>`` itself as its BOS (SmolLM2's does)."""
    rest = text[len(bos):]
    return rest if bos and text.startswith(bos) and rest.startswith(START) else text


def quote(value: str) -> str:
    """A Modelfile argument: bare when one line without edge spaces or a leading quote,
    else in triple quotes (the parser has no escapes, so a value cannot hold \"\"\")."""
    if '"""' in value:
        raise UserError('a Modelfile value cannot contain """ (Ollama\'s parser has no '
                        "escapes); change the run's system message")
    if "\n" in value or value != value.strip() or value.startswith('"') or not value:
        return f'"""{value}"""'
    return value


def _number(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class ModelfileParts:
    gguf: str  # absolute path
    run: str
    quant: str
    chosen: Chosen
    system: str | None  # the run's system message
    system_source: str  # where it came from, in words


def modelfile(p: ModelfileParts, choice: TemplateChoice) -> str:
    """The Modelfile's text (module docstring)."""
    d = p.chosen.decoding
    system, source = (p.system, p.system_source) if p.system else \
        (choice.default_system, "the chat template's own default system message")
    lines = [f"# Ollama Modelfile for the ssd-local run '{p.run}' ({p.quant} GGUF),",
             "# written by `ssd-local export --to ollama`; create the model with",
             "#   ollama create NAME -f THIS_FILE",
             f"FROM {p.gguf}", "",
             *_comment(f"decoding: {p.chosen.source} (top-k 0 and top-p 1 mean off; "
                       "temperature 0 is greedy)"),
             f"PARAMETER temperature {_number(d.temperature)}",
             f"PARAMETER top_k {int(d.top_k)}",
             f"PARAMETER top_p {_number(d.top_p)}",
             "# no min-p and no repetition penalty: the paper decodes with temperature and",
             "# truncation only",
             "PARAMETER min_p 0", "PARAMETER repeat_penalty 1", "",
             *_comment(f"template: {choice.reason}")]
    if choice.go_template is not None:
        lines.append(f"TEMPLATE {quote(choice.go_template)}")
    lines += [f"PARAMETER stop {_stop(s)}" for s in choice.stops]
    if system:
        lines += ["", *_comment(f"system message: {source}; change or delete it for "
                                "other tasks"), f"SYSTEM {quote(system)}"]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, 86, break_on_hyphens=False)]


def _stop(token: str) -> str:
    if '"' in token or "\n" in token:
        raise UserError(f"the stop token {token!r} cannot be written in a Modelfile")
    return f'"{token}"'
