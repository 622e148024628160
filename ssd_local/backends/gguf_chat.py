"""A GGUF's chat facts, read from its header only, and its chat template rendered.

``read_chat(path)`` walks the key/value section of the header (``gguf``'s own reader parses
every token of the vocabulary into numpy parts: about 11 s for SmolLM2's 49k tokens; this
walk skips what it does not need and takes a fraction of a second on a 150k vocabulary) and
returns the Jinja chat template, the BOS/EOS/EOT token texts and a few ``general.*`` names.
``render()`` applies a template to messages with llama-cpp-python's ``Jinja2ChatFormatter``,
the renderer the llama.cpp engine samples with (``LlamaCppEngine.render``), so a prompt
rendered here is the prompt the run's GGUF sees.

GGUF layout (little-endian): ``GGUF``, u32 version, u64 tensor count, u64 key count, then
per key: u64 length + name, u32 type, value; strings are u64 length + bytes; arrays are
u32 element type + u64 count + elements.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_WANTED = ("tokenizer.chat_template", "tokenizer.ggml.bos_token_id",
           "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
           "general.architecture", "general.name", "general.basename",
           "general.base_model.0.repo_url", "general.source.huggingface.repository")


@dataclass(frozen=True)
class GGUFChat:
    template: str | None
    bos: str  # the token texts ('' when the GGUF names none)
    eos: str
    eot: str
    meta: dict[str, Any]  # the other keys of _WANTED that the file has


class _Walk:
    def __init__(self, buf: Any):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def skip(self, kind: int) -> None:
        if kind == _STRING:
            self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        elif kind == _ARRAY:
            elem, n = self.take("<I"), self.take("<Q")
            if elem in _SCALARS:
                self.pos += n * struct.calcsize(_SCALARS[elem])
            else:
                for _ in range(n):
                    self.skip(elem)
        else:
            self.pos += struct.calcsize(_SCALARS[kind])

    def value(self, kind: int) -> Any:
        return self.string() if kind == _STRING else self.take(_SCALARS[kind])


def read_chat(path: Path) -> GGUFChat:
    """The chat template and special tokens of the GGUF at ``path`` (header only)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _read(_Walk(mm), path)
    except (OSError, ValueError, KeyError, struct.error, IndexError) as exc:
        raise UserError(f"{path.name} is not a GGUF file this can read ({exc}); re-export "
                        "it with `ssd-local export`") from None


def _read(w: _Walk, path: Path) -> GGUFChat:
    if w.take("4s") != b"GGUF":
        raise ValueError("no GGUF magic")
    w.take("<I")  # version
    w.take("<Q")  # tensor count
    found: dict[str, Any] = {}
    tokens_at: int | None = None
    for _ in range(w.take("<Q")):
        key, kind = w.string(), w.take("<I")
        if key == "tokenizer.ggml.tokens" and kind == _ARRAY:
            tokens_at = w.pos
            w.skip(kind)
        elif key in _WANTED and kind != _ARRAY:
            found[key] = w.value(kind)
        else:
            w.skip(kind)
    ids = {k: found.pop(f"tokenizer.ggml.{k}_token_id", None) for k in ("bos", "eos", "eot")}
    texts = _token_texts(w, tokens_at, {i for i in ids.values() if i is not None})
    return GGUFChat(found.pop("tokenizer.chat_template", None),
                    *(texts.get(ids[k], "") for k in ("bos", "eos", "eot")), meta=found)


def _token_texts(w: _Walk, at: int | None, wanted: set[int]) -> dict[int, str]:
    if at is None or not wanted:
        return {}
    w.pos = at
    if w.take("<I") != _STRING:
        return {}
    n, out = w.take("<Q"), {}
    for i in range(min(n, max(wanted) + 1)):
        if i in wanted:
            out[i] = w.string()
        else:
            w.skip(_STRING)
    return out


def render(chat: GGUFChat, messages: list[dict[str, str]]) -> str:
    """``messages`` rendered by the GGUF's template, with the generation prompt."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    if not chat.template:
        raise UserError("the GGUF has no chat template")
    return Jinja2ChatFormatter(chat.template, chat.eos, chat.bos)(messages=messages).prompt
