"""A GGUF's recommended sampling: the ``general.sampling.*`` keys that llama.cpp's own tools
(``llama-server``, ``llama-cli``: ``common_init_sampler_from_model`` in the pinned
llama.cpp's ``common/common.cpp``) take as their defaults when the user sets none. The
converter writes them from the HF folder's ``generation_config.json`` (``temperature``,
``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``) or from a ``--metadata`` file.

We write temperature, top-k and top-p, the paper's order (``sequence``
``temperature;top_k;top_p``: llama.cpp's own default order truncates first and applies
temperature last) and min-p 0 / repetition penalty 1 (the paper decodes with temperature
and truncation only; llama.cpp defaults to min-p 0.05). Temperature 0 is greedy there.

Updating an existing GGUF: a new file is written next to it (the old header with these
keys replaced or added, the tensor infos and data copied byte for byte, since tensor
offsets are relative to the aligned data section), read back, fsynced and renamed over
the old one. A reader that has the old file open (a server) keeps the old inode. It needs
free disk space for one more copy of the file.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any

from ..config import Decoding
from ..errors import UserError

PREFIX = "general.sampling."
PAPER_ORDER = "temperature;top_k;top_p"
_STRING, _INT32, _FLOAT32 = 8, 5, 6  # GGUFValueType


def sampling_keys(d: Decoding) -> dict[str, Any]:
    """The metadata for decoding ``d`` (also the converter's ``--metadata`` override)."""
    return {PREFIX + "sequence": PAPER_ORDER, PREFIX + "temp": float(d.temperature),
            PREFIX + "top_k": int(d.top_k), PREFIX + "top_p": float(d.top_p),
            PREFIX + "min_p": 0.0, PREFIX + "penalty_repeat": 1.0}


def read_sampling(path: Path) -> dict[str, Any]:
    """The ``general.sampling.*`` values a GGUF holds (empty when none)."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for name, f in r.fields.items():
        if name.startswith(PREFIX):
            out[name] = f.contents()
    return out


def _kv(key: str, value: Any) -> bytes:
    k = key.encode()
    head = struct.pack("<Q", len(k)) + k
    if isinstance(value, str):
        v = value.encode()
        return head + struct.pack("<IQ", _STRING, len(v)) + v
    if isinstance(value, int):
        return head + struct.pack("<Ii", _INT32, value)
    return head + struct.pack("<If", _FLOAT32, value)


def _size(field: Any) -> int:
    return sum(int(p.nbytes) for p in field.parts)


def write_sampling(path: Path, d: Decoding) -> None:
    """Set ``path``'s sampling metadata to ``d``, atomically (see the module docstring)."""
    from gguf import GGUFReader

    keys = sampling_keys(d)
    r = GGUFReader(str(path))
    if r.byte_order != "I":
        raise UserError(f"{path.name} is a big-endian GGUF; re-export it to update its "
                        "sampling settings")
    raw = r.data
    kvs = [f for name, f in r.fields.items() if not name.startswith("GGUF.")]
    kept = b"".join(bytes(raw[f.offset:f.offset + _size(f)]) for f in kvs
                    if f.name not in keys)
    added = b"".join(_kv(k, v) for k, v in keys.items())
    n_kv = sum(f.name not in keys for f in kvs) + len(keys)
    version = int(r.fields["GGUF.version"].parts[0][0])
    head = b"GGUF" + struct.pack("<IQQ", version, len(r.tensors), n_kv) + kept + added
    if r.tensors:
        first = r.tensors[0].field.offset
        last = r.tensors[-1].field
        infos = bytes(raw[first:last.offset + _size(last)])
    else:
        infos = b""
    head += infos
    head += b"\0" * (-len(head) % r.alignment)
    data_offset = r.data_offset
    del r, raw  # release the memory map before replacing the file
    tmp = path.with_name(f".{path.name}.sampling.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(head)
            src.seek(data_offset)
            shutil.copyfileobj(src, dst, 16 * 2**20)
            dst.flush()
            os.fsync(dst.fileno())
        _check(tmp, keys, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check(tmp: Path, keys: dict[str, Any], original: Path) -> None:
    """The new file reads back with the same tensors and the new keys."""
    from gguf import GGUFReader

    new, old = GGUFReader(str(tmp)), GGUFReader(str(original))
    same = [(t.name, t.shape.tolist(), int(t.n_bytes)) for t in new.tensors] == \
        [(t.name, t.shape.tolist(), int(t.n_bytes)) for t in old.tensors]
    got = {k: new.fields[k].contents() for k in keys if k in new.fields}
    ok = same and all(got.get(k) == v if isinstance(v, (str, int)) else
                      abs(float(got.get(k, float("nan"))) - v) < 1e-6 for k, v in keys.items())
    if not ok or new.data.size - new.data_offset != old.data.size - old.data_offset:
        raise UserError(f"rewriting {original.name}'s sampling settings did not read back; "
                        "the GGUF is unchanged")
