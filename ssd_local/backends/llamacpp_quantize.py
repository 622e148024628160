"""llama.cpp's quantizer through llama-cpp-python, in a child process so its per-tensor
log lines (written by C code straight to stderr) land in a log file, not on the screen.

    python -m ssd_local.backends.llamacpp_quantize SRC.gguf DST.gguf q4_k_m
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

from ..config import QUANT_TYPES
from ..errors import UserError

# llama.cpp's file type for each of our quant types: LLAMA_FTYPE_MOSTLY_<TYPE>
QUANTS = {q: f"LLAMA_FTYPE_MOSTLY_{q.upper()}" for q in QUANT_TYPES}


def quantize(src: Path, dst: Path, quant: str, log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ quantize {src.name} -> {dst.name} ({quant})\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", __name__, str(src), str(dst), quant],
                           stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise UserError(f"llama.cpp's quantizer failed for {quant}; see {log}")


def _main(src: str, dst: str, quant: str) -> int:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:4]))
