"""A GGUF file's model shape from its header, in plain Python: the scalar metadata and the
tensor names, without the tokenizer arrays' contents or any tensor data (the ``gguf``
package's reader parses every array and takes seconds; this takes milliseconds). Used by
the memory estimate before a GGUF is ever converted or loaded."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UserError

# GGUF value types: uint8 int8 uint16 int16 uint32 int32 float32 bool string array
# uint64 int64 float64
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> Any:
    """A scalar or string; an array is skipped and stands as its length."""
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        inner, n = _read(f, "<I"), _read(f, "<Q")
        if inner in _SCALARS:
            f.seek(n * struct.calcsize(_SCALARS[inner]), 1)
        else:
            for _ in range(n):
                _value(f, inner)
        return n
    raise ValueError(f"unknown GGUF value type {kind}")


def read_header(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(metadata: scalars, strings, and arrays as their lengths; tensor names)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF" or _read(f, "<I") < 2:
                raise ValueError("not a GGUF v2+ file")
            n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
            meta = {}
            for _ in range(n_kv):
                key = _string(f)
                meta[key] = _value(f, _read(f, "<I"))
            names = []
            for _ in range(n_tensors):
                names.append(_string(f))
                f.seek(8 * _read(f, "<I") + 4 + 8, 1)  # dims, type, offset
            return meta, names
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise UserError(f"cannot read the GGUF header of {path.name} ({exc})") from None


def gguf_config(path: Path) -> dict[str, Any]:
    """The model's shape as a transformers config.json would give it, for the weights as
    ssd-local trains them: converted to an fp32 transformers folder (``gguf_to_hf``)."""
    meta, names = read_header(path)
    arch = str(meta.get("general.architecture", ""))

    def get(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    cfg = {"model_type": arch, "num_hidden_layers": get("block_count"),
           "hidden_size": get("embedding_length"),
           "intermediate_size": get("feed_forward_length"),
           "num_attention_heads": get("attention.head_count"),
           "num_key_value_heads": get("attention.head_count_kv"),
           "head_dim": get("attention.key_length"),
           "vocab_size": get("vocab_size") or meta.get("tokenizer.ggml.tokens"),
           "tie_word_embeddings": "output.weight" not in names, "dtype": "float32"}
    if get("expert_count"):
        cfg["num_experts"] = get("expert_count")
    return {k: v for k, v in cfg.items() if v is not None}
