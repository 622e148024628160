"""``ssd-local export RUN --to ollama|lmstudio``: the run's GGUF, in the tool a user already
has, with the run's decoding.

The GGUF handed over is the first type of ``--quant``; the export stage runs first when
any asked type is missing (it skips what is done), and not at all when every one exists.

- **ollama**: ``RUN/ollama/Modelfile`` (``app/ollama.py``), then ``ollama create NAME -f
  RUN/ollama/Modelfile`` when ``ollama`` is on PATH; otherwise that exact command is
  returned for the user to run. Ollama copies the GGUF into its own store at create time.
- **lmstudio**: LM Studio lists ``MODELS/<publisher>/<model>/<file>.gguf``. MODELS is
  ``--lmstudio-models``, else what LM Studio itself uses (``lms``' ``findLMStudioHome`` and
  ``resolveModelsFolderPath``): the home is ``$LMSTUDIO_HOME``, else the folder named in
  ``~/.lmstudio-home-pointer``, else ``~/.cache/lm-studio`` when it exists, else
  ``~/.lmstudio``; MODELS is ``downloadsFolder`` of the home's ``settings.json`` (the
  "models directory" set in the app), else ``HOME/models``. The file arrives as a hard link
  (no copy, no extra disk), or, across file systems, a copy; either is made under a
  temporary name in the target folder and renamed into place, so LM Studio never sees a
  half-written file. With the ``lms`` CLI (on PATH, or in the home's ``bin/`` where LM
  Studio installs it) and no ``--lmstudio-models``, ``lms import -y --user-repo
  PUBLISHER/MODEL --hard-link GGUF`` does the linking instead; ``lms`` copies without a
  temporary name, so when its hard link fails the copy is made here.
  A file already in place with the same content is left alone; a different one (the run
  was re-exported, or ``compare`` rewrote its sampling metadata) is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LMSTUDIO_PUBLISHER, ExportConfig, HandoffConfig
from ..errors import UserError
from ..events import Log, OnEvent, Warning, ignore
from . import decoding
from .export import export, run_ggufs
from .ollama import ModelfileParts, choose_template, modelfile
from .runs import Run, atomic_write_bytes, sha256_file


@dataclass(frozen=True)
class HandoffResult:
    target: str  # ollama | lmstudio
    name: str  # Ollama's model name, or LM Studio's publisher/model
    gguf: Path  # the run's GGUF that was handed over
    path: Path  # the Modelfile, or the file in LM Studio's models folder
    command: list[str] | None  # what ran here, or (ran False) what the user should run
    ran: bool
    how: str  # in words: what was done
    decoding: decoding.Chosen
    notes: list[str] = field(default_factory=list)


def export_to(run_name: str, export_cfg: ExportConfig, cfg: HandoffConfig, *,
              on_event: OnEvent = ignore) -> HandoffResult:
    cfg.validate()
    quants = export_cfg.quants()
    run = Run.load(run_name)
    if any(q not in run_ggufs(run) for q in quants):
        export(run_name, export_cfg, on_event=on_event)
        run = Run.load(run_name)
    gguf = run_ggufs(run)[quants[0]]
    if cfg.to == "ollama":
        return to_ollama(run, quants[0], gguf, cfg, on_event)
    return to_lmstudio(run, gguf, cfg, on_event)


# -- Ollama ----------------------------------------------------------------------------------
def to_ollama(run: Run, quant: str, gguf: Path, cfg: HandoffConfig,
              on_event: OnEvent = ignore) -> HandoffResult:
    from ..backends.gguf_chat import read_chat

    chosen = decoding.tuned(run)
    choice = choose_template(read_chat(gguf))
    system = run.manifest.get("config", {}).get("sample", {}).get("system_prompt")
    text = modelfile(ModelfileParts(str(gguf.resolve()), run.name, quant, chosen, system,
                                    "the one the run was sampled and trained with, which "
                                    "`eval` and `compare` also use"), choice)
    path = run.path / "ollama" / "Modelfile"
    atomic_write_bytes(path, text.encode())
    on_event(Log(f"wrote {path}"))
    name = cfg.name or run.name
    exe = shutil.which("ollama")
    command = [exe or "ollama", "create", name, "-f", str(path)]
    notes = [] if choice.go_template else [choice.reason]
    if exe is None:
        return HandoffResult("ollama", name, gguf, path, command, False,
                             "Modelfile written; Ollama is not installed here", chosen, notes)
    on_event(Log(f"running {' '.join(command)}"))
    _run(command, "ollama create", "is the Ollama server running? (`ollama serve`)")
    return HandoffResult("ollama", name, gguf, path, command, True,
                         f"created the Ollama model {name}", chosen, notes)


def _run(command: list[str], what: str, hint: str) -> str:
    try:
        r = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise UserError(f"`{what}` could not start ({exc})") from None
    if r.returncode != 0:
        last = next((x for x in reversed((r.stderr + r.stdout).splitlines()) if x.strip()),
                    f"exit status {r.returncode}")
        raise UserError(f"`{what}` failed: {last.strip()}; {hint}")
    return r.stdout


# -- LM Studio -------------------------------------------------------------------------------
def lmstudio_home() -> Path:
    """LM Studio's home folder, found the way ``lms`` finds it (module docstring)."""
    env = os.environ.get("LMSTUDIO_HOME")
    if env:
        return Path(env).expanduser().resolve()
    home = Path.home().resolve()
    pointer = home / ".lmstudio-home-pointer"
    if pointer.is_file() and pointer.read_text(errors="replace").strip():
        return Path(pointer.read_text(errors="replace").strip()).expanduser()
    cache = home / ".cache" / "lm-studio"
    return cache if cache.exists() else home / ".lmstudio"


def lmstudio_models_dir() -> Path:
    """The models folder LM Studio lists: its settings' ``downloadsFolder``, else
    ``HOME/models``."""
    home = lmstudio_home()
    try:
        folder = json.loads((home / "settings.json").read_text()).get("downloadsFolder")
    except (OSError, ValueError, AttributeError):
        folder = None
    return Path(folder).expanduser() if isinstance(folder, str) and folder else home / "models"


def to_lmstudio(run: Run, gguf: Path, cfg: HandoffConfig,
                on_event: OnEvent = ignore) -> HandoffResult:
    name = cfg.name or f"{LMSTUDIO_PUBLISHER}/{run.name}"
    models = Path(cfg.lmstudio_models).expanduser() if cfg.lmstudio_models \
        else lmstudio_models_dir()
    target = models / name / gguf.name
    chosen = decoding.tuned(run)
    d = chosen.decoding
    notes = [f"LM Studio keeps its own sampling settings: set this model's to temperature "
             f"{d.temperature:g}, top-k {d.top_k} (0 = off), top-p {d.top_p:g}, min-p 0 and "
             "repeat penalty 1 in the app (the GGUF also carries them as general.sampling.*, "
             "which llama.cpp's own tools read)"]

    def result(how: str, command: list[str] | None = None) -> HandoffResult:
        return HandoffResult("lmstudio", name, gguf, target, command, command is not None,
                             how, chosen, notes)

    if _same_file(gguf, target):
        return result(f"already in LM Studio's models folder ({models})")
    lms = shutil.which("lms") or shutil.which("lms", path=str(lmstudio_home() / "bin"))
    if lms and not cfg.lmstudio_models and not target.exists():
        command = [lms, "import", "-y", "--user-repo", name, "--hard-link", str(gguf)]
        on_event(Log(f"running {' '.join(command)}"))
        try:
            _run(command, "lms import", "placing the file directly instead")
        except UserError as exc:
            on_event(Warning(str(exc)))
        else:
            if _same_file(gguf, target):
                return result("imported with `lms import --hard-link`", command)
            on_event(Warning(f"`lms import` did not leave the file at {target}; placing it "
                             "there directly"))
    how = place(gguf, target)
    on_event(Log(f"{how}: {target}"))
    return result(f"placed in LM Studio's models folder ({how})")


def _same_file(a: Path, b: Path) -> bool:
    if not b.is_file():
        return False
    if os.path.samefile(a, b):
        return True
    return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def place(src: Path, target: Path) -> str:
    """``src`` at ``target`` atomically: a hard link, else a copy, made under a temporary
    name next to ``target`` and renamed over it. Returns which of the two it made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
            how = "hard link"
        except OSError:  # another file system, or one without hard links
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 16 * 2**20)
                fo.flush()
                os.fsync(fo.fileno())
            how = "copy"
        os.replace(tmp, target)
    except OSError as exc:
        raise UserError(f"cannot write {target} ({exc.strerror or exc}); check that the "
                        "folder is writable, or pass --lmstudio-models DIR") from None
    finally:
        tmp.unlink(missing_ok=True)
    return how
