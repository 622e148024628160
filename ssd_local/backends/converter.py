"""llama.cpp's own HF -> GGUF converter, at the exact llama.cpp version compiled into the
installed llama-cpp-python.

The converter ships in llama-cpp-python's source distribution
(``vendor/llama.cpp/convert_hf_to_gguf.py`` with its ``conversion/`` package and
``gguf-py/``). On first use it is extracted from that sdist into the user cache: from a
local copy when one is given (``make setup`` passes the one it built from), else fetched
with ``pip download``. It is never written by hand and never committed.

    python -m ssd_local.backends.converter install [SDIST.tar.gz]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from ..config.paths import cache_root
from ..errors import UserError

_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


def llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise UserError("llama-cpp-python is not installed; run `make setup` or `pip install "
                        "'ssd-local[llama]'`") from None


def converter_dir(version: str | None = None) -> Path:
    return cache_root() / f"llama.cpp-converter-{version or llama_cpp_version()}"


def install(sdist: Path | None = None) -> Path:
    """Extract the converter for the installed llama-cpp-python (once)."""
    version = llama_cpp_version()
    out = converter_dir(version)
    if (out / "convert_hf_to_gguf.py").exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                "--no-binary", ":all:", "-d", tmp,
                                f"llama-cpp-python=={version}"],
                               capture_output=True, text=True)
            found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if r.returncode != 0 or not found:
                raise UserError("cannot fetch llama-cpp-python's source (it carries llama.cpp's "
                                "GGUF converter); connect to PyPI once, or run `python -m "
                                "ssd_local.backends.converter install SDIST.tar.gz`")
            sdist = found[0]
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        cache_root().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_root()))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(_MEMBERS)]
            if not any(m.name.endswith("convert_hf_to_gguf.py") for m in members):
                raise UserError(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py; is it "
                                f"llama-cpp-python {version}'s source distribution?")
            for m in members:
                m.name = m.name[len(prefix):]
                tar.extract(m, staging, filter="data")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


def convert(hf_folder: Path, outfile: Path, log: Path, outtype: str = "f16",
            metadata: dict[str, object] | None = None) -> None:
    """Run the converter in a child process; its output goes to ``log``. ``metadata``:
    GGUF keys the converter's ``--metadata`` override sets (e.g. ``general.sampling.*``)."""
    import json

    script = install() / "convert_hf_to_gguf.py"
    log.parent.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    if metadata:
        override = outfile.with_name(f".{outfile.name}.metadata.json")
        override.write_text(json.dumps(metadata))
        extra = ["--metadata", str(override)]
    with open(log, "a") as f:
        f.write(f"\n$ convert_hf_to_gguf.py {hf_folder} --outtype {outtype} {' '.join(extra)}"
                f"\n")
        f.flush()
        try:
            r = subprocess.run([sys.executable, str(script), str(hf_folder), "--outfile",
                                str(outfile), "--outtype", outtype, *extra], stdout=f,
                               stderr=subprocess.STDOUT)
        finally:
            if extra:
                Path(extra[1]).unlink(missing_ok=True)
    if r.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        arch = next((ln for ln in tail if "not supported" in ln.lower()), None)
        if arch:
            msg = arch.split(":")[-1].strip()[-160:]
            raise UserError(f"llama.cpp's converter cannot handle this model ({msg}); export "
                            f"needs an architecture llama.cpp supports; details in {log}")
        raise UserError(f"llama.cpp's converter failed; see {log}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "install":
        print(install(Path(sys.argv[2]) if len(sys.argv) > 2 else None))
    else:
        print(__doc__)
