"""``ssd-local lens RUN``: which texts, which two models, which decoding; the files.

- Texts (``--source``): ``samples``, the run's own samples (its training data:
  ``prompt_text`` + completion, the end token scored where the answer stopped);
  ``eval:FOLDER``, the answers in ``RUN/evals/FOLDER/generations.jsonl``, their prompts
  rebuilt from the benchmark (its ``config.json``) with the base model's chat template,
  as ``eval`` rendered them; a ``.jsonl`` file with ``prompt_text`` (or ``prompt``,
  rendered with the base model's template and the run's system message) and
  ``completion`` per line, optional ``id`` and ``finish_reason``.
- Models: the base is the model the run started from (``--base``), the tuned model its
  merged folder, else its most precise GGUF (``--tuned``). Both go through the same
  engine where possible: a GGUF base is read through its transformers conversion (the
  very weights training started from) when the tuned model is a folder.
- Decoding: the run's T_train, top-k and top-p as recorded in its sample config; an
  explicit ``--temperature/--top-k/--top-p`` wins. The JSON says which applied.
- Files: ``RUN/lens/lens-SOURCE.json`` (the rule, decoding, models, summary and the
  per-token table) and ``RUN/lens/lens-SOURCE.png``, each written atomically.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...backends import is_available
from ...backends.registry import open_tokenizer
from ...config import SYSTEM_PROMPT, Decoding, EvalConfig, LensConfig, from_dict
from ...errors import UserError
from ...events import Log, OnEvent, Warning, ignore
from .. import models
from ..artefacts import Found
from ..prompts import chat
from ..runs import Run, atomic_write_json, read_jsonl_repairing, runs_root
from .scoring import Comparison, Text, compare
from .stats import rule_text


@dataclass(frozen=True)
class LensReport:
    run: str
    source: str  # what was scored, in words
    decoding: Decoding
    decoding_source: str  # where the decoding came from, in words
    json_path: Path
    png_path: Path
    comparison: Comparison
    notes: tuple[str, ...]
    rule: str  # the lock/fork rule in words

    @property
    def summary(self) -> dict[str, Any]:
        return self.comparison.summary


# -- decoding and models ------------------------------------------------------------------------
def decoding_for(run: Run, cfg: LensConfig) -> tuple[Decoding, str]:
    """The run's T_train/top-k/top-p from its recorded sample config; explicit wins."""
    s = run.manifest.get("config", {}).get("sample") or {}
    if any(s.get(k) is None for k in ("temperature", "top_k", "top_p")):
        if None in (cfg.temperature, cfg.top_k, cfg.top_p):
            raise UserError(f"run '{run.name}' records no sampling decoding; pass "
                            "--temperature, --top-k and --top-p")
        return Decoding(cfg.temperature, cfg.top_k, cfg.top_p), "given on the command line"
    recorded = Decoding(float(s["temperature"]), int(s["top_k"]), float(s["top_p"]))
    d = cfg.over(recorded)
    if d == recorded:
        return d, "the run's T_train, from its recorded sample config"
    return d, f"given, in place of the run's T_train decoding {recorded.describe()}"


def tuned_of(run: Run) -> models.ModelRef:
    """The run's tuned model: its merged folder, else its most precise GGUF."""
    from ...config import QUANT_TYPES
    from ..export import run_ggufs

    if (run.path / "merged" / "config.json").exists():
        return models.resolve(str(run.path / "merged"))
    ggufs = run_ggufs(run)
    for q in QUANT_TYPES:
        if q in ggufs:
            return models.resolve(str(ggufs[q]))
    raise UserError(f"run '{run.name}' has no tuned model yet; finish it with `ssd-local "
                    f"train {run.name}` (or pass --tuned MODEL)")


def models_for(run: Run, cfg: LensConfig, on_event: OnEvent = ignore
               ) -> tuple[models.ModelRef, models.ModelRef, list[str]]:
    """(base, tuned, notes): read by the same engine where possible."""
    from ..training import model_of

    base = models.resolve(cfg.base, on_event=on_event) if cfg.base else model_of(run, on_event)
    tuned = models.resolve(cfg.tuned, on_event=on_event) if cfg.tuned else tuned_of(run)
    notes = []
    if base.kind == "gguf" and tuned.kind == "hf":
        if not is_available("torch"):
            raise UserError("the tuned model is a transformers folder, which the lens reads "
                            "with torch: `pip install 'ssd-local[torch]'`, or pass --tuned "
                            "with one of the run's GGUFs")
        path = models.ensure_hf_folder(base, on_event)
        base = replace(base, kind="hf", path=path)
        notes.append(f"base {base.name} read through its transformers conversion (the "
                     "weights training started from), like the tuned folder")
    elif base.kind != tuned.kind:
        notes.append(f"base is a {base.kind} model, tuned a {tuned.kind} one: two engines, so "
                     "precision and kernels differ as well as the weights")
    elif base.kind == "gguf":
        notes.append("both are GGUFs: differences in quantization show up too")
    return base, tuned, notes


# -- texts --------------------------------------------------------------------------------------
def _take(items: list[Any], limit: int) -> list[Any]:
    return items[:limit] if limit else items


def texts_for(run: Run, cfg: LensConfig, base: models.ModelRef
              ) -> tuple[list[Text], str, str]:
    """(texts, file-name slug, what they are in words)."""
    src = cfg.source.strip()
    if src == "samples":
        rows = _take(run.read_samples(), cfg.limit)
        texts = [Text(r["prompt_text"], r["completion"], f"{r['prompt_id']}#"
                      f"{r.get('sample_index', 0)}", r.get("finish_reason") == "stop")
                 for r in rows]
        return texts, "samples", f"{len(texts)} of the run's samples (its training data)"
    if src.startswith("eval:"):
        return _eval_texts(run, src[5:], cfg, base)
    path = Path(src).expanduser()
    if path.suffix == ".jsonl" and path.is_file():
        return _file_texts(run, path, cfg, base)
    raise UserError(f"--source {src!r} is not samples, eval:FOLDER or a .jsonl file")


def _render(base: models.ModelRef, prompts: list[str], system: str | None) -> list[str]:
    tok = open_tokenizer(base.kind, base.path)
    try:
        return [tok.render(chat(p, system)) for p in prompts]
    finally:
        tok.close()


def _eval_texts(run: Run, name: str, cfg: LensConfig, base: models.ModelRef
                ) -> tuple[list[Text], str, str]:
    from ..evaluation.evaluate import load_problems

    folder = run.path / "evals" / name
    if not (folder / "generations.jsonl").exists():
        have = sorted(p.parent.name for p in (run.path / "evals").glob("*/generations.jsonl"))
        raise UserError(f"run '{run.name}' has no evaluation '{name}'; it has: "
                        + (", ".join(have) or "none"))
    meta = json.loads((folder / "config.json").read_text())
    problems = {p.task_id: p for p in load_problems(from_dict(EvalConfig, meta["config"]))}
    rows = _take([r for r in read_jsonl_repairing(folder / "generations.jsonl")
                  if r["task_id"] in problems], cfg.limit)
    system = None if meta.get("thinking") else SYSTEM_PROMPT
    rendered = _render(base, [problems[r["task_id"]].prompt for r in rows], system)
    texts = [Text(p, r["completion"], f"{r['task_id']}#{r['index']}",
                  r.get("finish_reason") == "stop") for p, r in zip(rendered, rows)]
    return texts, f"eval-{name}", (f"{len(texts)} answers of {meta.get('target', '?')} in "
                                   f"evals/{name}")


def _file_texts(run: Run, path: Path, cfg: LensConfig, base: models.ModelRef
                ) -> tuple[list[Text], str, str]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if "completion" not in r or not ({"prompt", "prompt_text"} & set(r)):
                raise ValueError
        except ValueError:
            raise UserError(f"{path}:{n}: want a JSON object with prompt (or prompt_text) "
                            "and completion") from None
        rows.append(r)
    rows = _take(rows, cfg.limit)
    system = run.manifest.get("config", {}).get("sample", {}).get("system_prompt")
    need = [i for i, r in enumerate(rows) if "prompt_text" not in r]
    rendered = dict(zip(need, _render(base, [rows[i]["prompt"] for i in need], system)))
    texts = [Text(r.get("prompt_text", rendered.get(i, "")), r["completion"],
                  str(r.get("id", i)), r.get("finish_reason") == "stop")
             for i, r in enumerate(rows)]
    slug = "file-" + re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)
    return texts, slug, f"{len(texts)} texts from {path}"


# -- the command --------------------------------------------------------------------------------
def run_lens(run_name: str, cfg: LensConfig, *, on_event: OnEvent = ignore,
             cancel: threading.Event | None = None) -> LensReport:
    cfg.validate()
    run = Run.load(run_name)
    dec, dec_source = decoding_for(run, cfg)
    base, tuned, notes = models_for(run, cfg, on_event)
    texts, slug, what = texts_for(run, cfg, base)
    if not texts:
        raise UserError(f"nothing to score: {what}")
    on_event(Log(f"lens: {what}; decoding {dec.describe()} ({dec_source})"))
    for note in notes:
        on_event(Log(note))
    cmp = compare(base, tuned, texts, dec, cfg=cfg, on_event=on_event, cancel=cancel)
    cut = sum(e.cut for e in cmp.base.texts)
    if cut:
        notes.append(f"{cut} text(s) cut at --max-tokens {cfg.max_tokens} or the context")
        on_event(Warning(notes[-1]))
    out = run.path / "lens"
    json_path, png_path = out / f"lens-{slug}.json", out / f"lens-{slug}.png"
    record = {"run": run.name, "source": {"name": cfg.source, "texts": what},
              "decoding": dec.as_dict() | {"source": dec_source}, "rule": rule_text(cfg),
              "thresholds": {"lock": cfg.lock_threshold, "fork": cfg.fork_threshold},
              "models": {side: {"model": m.model, "path": m.path, "engine": m.engine}
                         for side, m in (("base", cmp.base), ("tuned", cmp.tuned))},
              "notes": notes, "summary": cmp.summary, "texts": cmp.table()}
    from .plot import plot

    plot(cmp, png_path, f"{run.name}: {what}, {dec.describe()}")
    atomic_write_json(json_path, record)
    return LensReport(run.name, what, dec, dec_source, json_path, png_path, cmp, tuple(notes),
                      record["rule"])


def lens_results() -> list[Found]:
    """Every lens result of every run (``RUN/lens/lens-*.json``), oldest path first."""
    root = runs_root()
    out = []
    for p in sorted(root.glob("*/lens/lens-*.json")) if root.exists() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out.append(Found(f"{p.parents[1].name}: {p.stem.removeprefix('lens-')}", p, data))
    return out

