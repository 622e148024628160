"""The run directory: ``$SSD_LOCAL_HOME/runs/<name>/``.

- ``manifest.json``: full config, model, package versions, stage states, artefact checksums.
  Always replaced atomically (write to a temp file, fsync, rename).
- ``samples.jsonl``: append-only, one JSON object per line, fsynced per append. A line torn
  by ``kill -9`` or a power cut is cut off on the next open, so it is sampled again.
- ``.lock``: an advisory ``flock`` held while a process writes the run.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from ..config import STAGES
from ..config.paths import home
from ..errors import UserError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TRACKED_PACKAGES = ("ssd-local", "llama-cpp-python", "torch", "transformers", "peft",
                     "accelerate", "mlx", "mlx-lm", "huggingface-hub", "gguf")


def runs_root() -> Path:
    return home() / "runs"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UserError(f"run name '{name}' is not valid; use letters, digits, '.', '_' or "
                        "'-' (up to 100 characters, starting with a letter or digit)")
    return name


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``RUN/.lock``; released when the process
    dies, so a killed run never stays locked."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"run '{self.path.parent.name}' is in use by pid {holder}; wait "
                            "for it to finish or stop it, or pick another --run") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Run:
    """One run directory. Open it with ``Run.create_or_open`` (writers, takes the lock) or
    ``Run.load`` (readers)."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.manifest: dict[str, Any] = {}
        self._lock: RunLock | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path) -> "Run":
        p = Path(name_or_path)
        path = p if (p.is_absolute() or p.exists()) and (p / "manifest.json").exists() \
            else runs_root() / check_name(str(name_or_path))
        if not (path / "manifest.json").exists():
            raise UserError(f"no run named '{name_or_path}'; list runs with `ssd-local runs`")
        run = cls(path)
        run.manifest = json.loads((path / "manifest.json").read_text())
        return run

    @classmethod
    def create_or_open(cls, name: str, model: dict[str, Any]) -> "Run":
        """Open run ``name`` for writing (creating it), lock it, and check it was made
        with the same model."""
        path = runs_root() / check_name(name)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.lock()
        try:
            mpath = path / "manifest.json"
            if mpath.exists():
                run.manifest = json.loads(mpath.read_text())
                old = run.manifest.get("model", {})
                if old.get("identity") != model.get("identity"):
                    raise UserError(
                        f"run '{name}' was made with model '{old.get('ref')}', not "
                        f"'{model.get('ref')}'; pass another --run name for a new run")
            else:
                run.manifest = {"format": 1, "name": name, "created": now(),
                                "model": model, "config": {}, "stages": {},
                                "artefacts": {}}
            run.manifest["versions"] = package_versions()
            run.save()
        except BaseException:
            run.unlock()
            raise
        return run

    def lock(self) -> None:
        self._lock = RunLock(self.path / ".lock")
        self._lock.acquire()

    def unlock(self) -> None:
        if self._lock:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # -- manifest --------------------------------------------------------------------------
    def save(self) -> None:
        self.manifest["updated"] = now()
        atomic_write_json(self.path / "manifest.json", self.manifest)

    def stage(self, stage: str) -> dict[str, Any]:
        return self.manifest.setdefault("stages", {}).setdefault(stage, {"state": "pending"})

    def stage_state(self, stage: str) -> str:
        return self.manifest.get("stages", {}).get(stage, {}).get("state", "pending")

    def set_stage(self, stage: str, state: str, **info: Any) -> None:
        s = self.stage(stage)
        s["state"] = state
        s["started" if state == "running" else "updated"] = now()
        s.update(info)
        self.save()

    def record_artefact(self, relpath: str, **extra: Any) -> None:
        p = self.path / relpath
        self.manifest.setdefault("artefacts", {})[relpath] = {
            "bytes": p.stat().st_size, "sha256": sha256_file(p), **extra}
        self.save()

    # -- samples ---------------------------------------------------------------------------
    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    def read_samples(self, repair: bool = False) -> list[dict[str, Any]]:
        """All complete samples. With ``repair`` (writers only), cut a torn last line."""
        return list(read_jsonl_repairing(self.samples_path, repair=repair))

    def append_samples(self, samples: list[dict[str, Any]]) -> None:
        if not samples:
            return
        data = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples).encode()
        fd = os.open(self.samples_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl_repairing(path: Path, repair: bool = False) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    raw = path.read_bytes()
    good_end = 0
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break  # torn tail: no newline
        line = raw[pos:nl]
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn line followed by later appends cannot happen; stop here
        good_end = nl + 1
        pos = nl + 1
        yield obj
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass(frozen=True)
class RunInfo:
    name: str
    model: str
    created: str
    stages: dict[str, str]
    samples: int


def list_runs() -> list[RunInfo]:
    root = runs_root()
    out = []
    if not root.exists():
        return out
    for d in sorted(root.iterdir()):
        m = d / "manifest.json"
        if not m.exists():
            continue
        try:
            man = json.loads(m.read_text())
        except json.JSONDecodeError:
            continue
        stages = {s: man.get("stages", {}).get(s, {}).get("state", "pending") for s in STAGES}
        if "running" in stages.values() and not is_locked(d):
            # killed mid-stage: nothing holds the run, rerunning resumes it
            stages = {s: "interrupted" if v == "running" else v for s, v in stages.items()}
        n = man.get("stages", {}).get("sample", {}).get("summary", {}).get("samples", 0)
        out.append(RunInfo(d.name, man.get("model", {}).get("ref", "?"),
                           man.get("created", ""), stages, n))
    return out
