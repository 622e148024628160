"""Prompt sources and chat messages.

- ``builtin``: the project's own offline set of coding problems (``data/builtin_prompts.jsonl``).
- ``rstar``: the paper's prompts, rStar-Coder ``seed_sft`` from the Hugging Face Hub, rows with
  ``is_passed`` true, de-duplicated on whitespace-normalised statements (about 10,168).
  Only the needed columns are read from the remote parquet files. ``rstar:DIR`` reads a
  local copy laid out as on the hub (``DIR/seed_sft/*.parquet``).
- a ``.jsonl`` file with a ``prompt`` field per line (optional ``id``), or a text file with
  one problem per line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError
from ..events import Log, OnEvent, ignore

RSTAR_REPO = "microsoft/rStar-Coder"
RSTAR_SUBSET = "seed_sft"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def normalise(text: str) -> str:
    return " ".join(text.split())


def text_id(text: str) -> str:
    return "p" + hashlib.sha1(normalise(text).encode()).hexdigest()[:12]


def load(source: str, limit: int | None = None, on_event: OnEvent = ignore) -> list[Prompt]:
    """Load a prompt source; ``limit`` keeps the first N."""
    if source == "builtin":
        prompts = load_builtin()
    elif source == "rstar" or source.startswith("rstar:"):
        local = source.partition(":")[2] or None
        prompts = load_rstar(Path(local).expanduser() if local else None, on_event)
    else:
        p = Path(source).expanduser()
        if not p.is_file():
            raise UserError(f"prompt source '{source}' not found; use builtin, rstar, "
                            "rstar:DIR, or a path to a .jsonl or .txt file")
        prompts = load_file(p)
    if not prompts:
        raise UserError(f"prompt source '{source}' holds no prompts")
    return prompts[:limit] if limit else prompts


def load_builtin() -> list[Prompt]:
    text = resources.files("ssd_local").joinpath("data/builtin_prompts.jsonl").read_text()
    return [Prompt(r["id"], r["prompt"]) for r in map(json.loads, text.splitlines()) if r]


def load_file(path: Path) -> list[Prompt]:
    """JSONL (one object with a ``prompt`` field per line) or plain text (a problem per line)."""
    out: list[Prompt] = []
    seen_ids: set[str] = set()
    is_jsonl = path.suffix in (".jsonl", ".json") or _looks_like_jsonl(path)
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            text, pid = _parse_jsonl_line(path, lineno, line)
        else:
            text, pid = line.strip(), None
        pid = pid or text_id(text)
        if pid in seen_ids:
            if pid.startswith("p") and pid == text_id(text):
                continue  # an exact duplicate statement: keep the first
            raise UserError(f"{path}:{lineno}: duplicate id '{pid}'; give each prompt a "
                            "unique id")
        seen_ids.add(pid)
        out.append(Prompt(pid, text))
    return out


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _parse_jsonl_line(path: Path, lineno: int, line: str) -> tuple[str, str | None]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be an "
                        'object like {"prompt": "..."}') from None
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) \
            or not obj["prompt"].strip():
        raise UserError(f'{path}:{lineno}: no "prompt" text field; each line must be an '
                        'object like {"prompt": "..."}')
    pid = obj.get("id", obj.get("task_id"))
    return obj["prompt"], (str(pid) if pid is not None else None)


# -- rStar-Coder ------------------------------------------------------------------------------
def rstar_prompt(question: str, starter_code: str | None) -> str:
    q = question.strip()
    if starter_code and starter_code.strip():
        q += "\n\nUse this starter code:\n```python\n" + starter_code.strip() + "\n```"
    return q


def dedupe_rstar(rows: Iterable[dict[str, Any]]) -> list[Prompt]:
    """Keep rows with ``is_passed`` true, first occurrence per whitespace-normalised
    statement (the recipe's de-duplication)."""
    out, seen = [], set()
    for r in rows:
        if not r.get("is_passed"):
            continue
        q = r.get("question") or ""
        key = normalise(q)
        if not key or key in seen:
            continue
        seen.add(key)
        qid = r.get("question_id")
        out.append(Prompt(f"rstar-{qid}" if qid not in (None, "") else text_id(q),
                          rstar_prompt(q, r.get("starter_code"))))
    return out


def load_rstar(local_dir: Path | None = None, on_event: OnEvent = ignore) -> list[Prompt]:
    from ..config.paths import home
    from .runs import atomic_write_bytes

    columns = ["question_id", "question", "starter_code", "is_passed"]
    if local_dir is not None:
        files = sorted((local_dir / RSTAR_SUBSET).glob("*.parquet"))
        if not files:
            raise UserError(f"no {RSTAR_SUBSET}/*.parquet under {local_dir}; point rstar:DIR "
                            "at a copy of the rStar-Coder dataset")
        return dedupe_rstar(_read_parquet_rows([str(f) for f in files], columns, None))
    cache = home() / "cache" / "rstar-seed_sft-prompts.jsonl"
    if cache.exists():
        return [Prompt(r["id"], r["prompt"]) for r in map(json.loads,
                                                           cache.read_text().splitlines())]
    import huggingface_hub as hf
    from .models import _hub_error

    on_event(Log(f"reading {RSTAR_REPO} {RSTAR_SUBSET} questions from the Hugging Face Hub"))
    try:
        fs = hf.HfFileSystem()
        files = sorted(fs.glob(f"datasets/{RSTAR_REPO}/{RSTAR_SUBSET}/*.parquet"))
        if not files:
            raise UserError(f"{RSTAR_REPO} has no {RSTAR_SUBSET} parquet files")
        prompts = dedupe_rstar(_read_parquet_rows(files, columns, fs))
    except UserError:
        raise
    except Exception as exc:
        raise _hub_error(exc, RSTAR_REPO) from exc
    atomic_write_bytes(cache, "".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n"
                                      for p in prompts).encode())
    return prompts


def _read_parquet_rows(files: list[str], columns: list[str], fs: Any) -> Iterable[dict]:
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(fs.open(f, "rb") if fs is not None else f)
        present = [c for c in columns if c in pf.schema_arrow.names]
        if "question" not in present:
            raise UserError(f"{f} has no 'question' column; is it rStar-Coder {RSTAR_SUBSET}?")
        for batch in pf.iter_batches(columns=present, batch_size=2048):
            yield from batch.to_pylist()


# -- chat messages ---------------------------------------------------------------------------
def chat(user_text: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The single-turn chat of the paper: optional system message, then the problem. The
    one place a chat is built (sampling, training's template check, evaluation)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user_text}]


def messages(prompt: Prompt, system_prompt: str | None) -> list[dict[str, str]]:
    return chat(prompt.text, system_prompt)
