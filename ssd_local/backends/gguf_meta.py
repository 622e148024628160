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


_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
          12: "d"}  # GGUFValueType -> struct format (8: string, 9: array)


class _Layout:
    """Where a GGUF's header parts lie: each key-value pair's byte span (and the value of
    the few we read), the tensor infos' span, the aligned start of the tensor data. A
    small parser of its own: gguf-py's reader builds an array per vocabulary entry, which
    takes seconds per file."""

    def __init__(self, buf: Any):
        self.buf = buf
        if bytes(buf[:4]) != b"GGUF":
            raise UserError("not a GGUF file")
        self.version, self.n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if self.version < 2 or self.version > 3:
            raise UserError(f"GGUF version {self.version} is not supported here (little-"
                            "endian v2/v3); re-export the model")
        pos = 24
        self.kvs: list[tuple[str, int, int]] = []  # key, start, end
        self.values: dict[str, Any] = {}
        for _ in range(n_kv):
            start = pos
            key, pos = self._string(pos)
            (vtype,), pos = struct.unpack_from("<I", buf, pos), pos + 4
            value, pos = self._value(vtype, pos, keep=key.startswith(PREFIX)
                                     or key == "general.alignment")
            self.kvs.append((key, start, pos))
            if value is not None:
                self.values[key] = value
        self.infos = (pos, self._skip_infos(pos))
        self.alignment = int(self.values.get("general.alignment", 32))
        end = self.infos[1]
        self.data_offset = end + (-end % self.alignment)

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self.buf, pos)
        return bytes(self.buf[pos + 8:pos + 8 + n]).decode("utf-8", "replace"), pos + 8 + n

    def _value(self, vtype: int, pos: int, keep: bool) -> tuple[Any, int]:
        if vtype in _FIXED:
            size = struct.calcsize(_FIXED[vtype])
            v = struct.unpack_from("<" + _FIXED[vtype], self.buf, pos)[0] if keep else None
            return v, pos + size
        if vtype == _STRING:
            v, end = self._string(pos)
            return (v if keep else None), end
        if vtype == 9:
            etype, count = struct.unpack_from("<IQ", self.buf, pos)
            pos += 12
            if etype in _FIXED:
                return None, pos + count * struct.calcsize(_FIXED[etype])
            for _ in range(count):
                _, pos = self._value(etype, pos, keep=False)
            return None, pos
        raise UserError(f"unknown GGUF value type {vtype}")

    def _skip_infos(self, pos: int) -> int:
        for _ in range(self.n_tensors):
            _, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", self.buf, pos)
            pos += 4 + 8 * n_dims + 4 + 8
        return pos


def _layout(path: Path) -> tuple[_Layout, Any, Any]:
    """The layout of ``path``, its memory map and its open file (the caller closes both)."""
    import mmap

    f = open(path, "rb")
    try:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # an empty file
        f.close()
        raise UserError(f"{path.name} is empty, not a GGUF") from None
    try:
        return _Layout(memoryview(m)), m, f
    except BaseException:
        m.close()
        f.close()
        raise


def _close(lay: _Layout, m: Any, f: Any) -> None:
    lay.buf.release()
    m.close()
    f.close()


def read_sampling(path: Path) -> dict[str, Any]:
    """The ``general.sampling.*`` values a GGUF holds (empty when none)."""
    lay, m, f = _layout(path)
    try:
        return {k: v for k, v in lay.values.items() if k.startswith(PREFIX)}
    finally:
        _close(lay, m, f)


def _kv(key: str, value: Any) -> bytes:
    k = key.encode()
    head = struct.pack("<Q", len(k)) + k
    if isinstance(value, str):
        v = value.encode()
        return head + struct.pack("<IQ", _STRING, len(v)) + v
    if isinstance(value, int):
        return head + struct.pack("<Ii", _INT32, value)
    return head + struct.pack("<If", _FLOAT32, value)


def _header(lay: _Layout, keys: dict[str, Any]) -> bytes:
    """The new header: the kept pairs verbatim, ours, the tensor infos, the padding."""
    buf = lay.buf
    kept = [(k, a, b) for k, a, b in lay.kvs if k not in keys]
    body = b"".join(bytes(buf[a:b]) for _, a, b in kept)
    body += b"".join(_kv(k, v) for k, v in keys.items())
    head = b"GGUF" + struct.pack("<IQQ", lay.version, lay.n_tensors, len(kept) + len(keys))
    head += body + bytes(buf[lay.infos[0]:lay.infos[1]])
    return head + b"\0" * (-len(head) % lay.alignment)


def write_sampling(path: Path, d: Decoding) -> None:
    """Set ``path``'s sampling metadata to ``d``, atomically (see the module docstring)."""
    keys = sampling_keys(d)
    lay, m, f = _layout(path)
    tmp = path.with_name(f".{path.name}.sampling.tmp")
    try:
        infos, data = bytes(lay.buf[lay.infos[0]:lay.infos[1]]), len(m) - lay.data_offset
        with open(tmp, "wb") as dst:
            dst.write(_header(lay, keys))
            f.seek(lay.data_offset)
            shutil.copyfileobj(f, dst, 16 * 2**20)
            dst.flush()
            os.fsync(dst.fileno())
        _check(tmp, keys, infos, data, path)
        os.replace(tmp, path)
    finally:
        _close(lay, m, f)
        tmp.unlink(missing_ok=True)


def _check(tmp: Path, keys: dict[str, Any], infos: bytes, data: int, original: Path) -> None:
    """The new file parses, with the same tensor infos and data size and the new keys."""
    lay, m, f = _layout(tmp)
    try:
        got = lay.values
        ok = bytes(lay.buf[lay.infos[0]:lay.infos[1]]) == infos \
            and len(m) - lay.data_offset == data and all(
                got.get(k) == v if isinstance(v, (str, int)) else
                abs(float(got.get(k, float("nan"))) - v) < 1e-6 for k, v in keys.items())
    finally:
        _close(lay, m, f)
    if not ok:
        raise UserError(f"rewriting {original.name}'s sampling settings did not read back; "
                        "the GGUF is unchanged")
