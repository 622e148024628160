"""Adopt the decoding ``compare`` measured as the tuned model's best: write it where every
consumer reads a decoding, so ``serve``, ``eval``, later exports and the run's GGUFs use it.

- ``manifest.json`` ``measured_decoding``: the decoding, and where it came from (benchmark,
  problems, samples per problem, the pass@1 and interval it had, when, which comparison
  file); :func:`decoding.tuned` returns it from then on. ``fuse`` drops it (a new tuned
  model has not been measured).
- ``merged/generation_config.json``: ``temperature``/``top_k``/``top_p`` (``do_sample``
  false for T=0, the HF way of saying greedy), which llama.cpp's converter turns into the
  GGUF's ``general.sampling.*`` keys at the next export.
- every GGUF of the run: its ``general.sampling.*`` keys rewritten in place, atomically
  (``backends/gguf_meta.py``), and its size and checksum re-recorded in the manifest.

A measured best at T=0 is adopted as greedy decoding: a deterministic coding model is a
legitimate served default, and it is what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Decoding
from ..errors import UserError
from ..events import Log, OnEvent, Warning, ignore
from .decoding import MEASURED, measured_source
from .runs import Run, atomic_write_json, now


def record(best: dict[str, Any], *, benchmark: str, problems: int, samples: int,
           comparison: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest record for ``best`` (a row of ``compare``'s verdict)."""
    return {"decoding": Decoding(best["temperature"], best["top_k"], best["top_p"]).as_dict(),
            "benchmark": benchmark, "problems": problems, "samples_per_problem": samples,
            "pass@1": best.get("pass@1"), "ci95": best.get("ci95", {}).get("pass@1"),
            "measured_at": now(), "comparison": str(comparison), "settings": settings}


def adopt(run_name: str, rec: dict[str, Any], on_event: OnEvent = ignore) -> bool:
    """Write ``rec`` into the run (see the module docstring). False, with a warning, when
    another process holds the run: the comparison's answers are kept, so a rerun of the
    same ``compare`` writes it in seconds."""
    run = Run.load(run_name)
    try:
        run.lock()
    except UserError as exc:
        on_event(Warning(f"the measured decoding was not written to the run: {exc}; rerun "
                         "the same compare when it is free (its answers are kept)"))
        return False
    try:
        d = Decoding.from_dict(rec["decoding"])
        run.manifest[MEASURED] = rec
        run.save()
        wrote = ["the run's manifest"]
        if write_generation_config(run.path / "merged", d):
            wrote.append("merged/generation_config.json")
        wrote += update_ggufs(run, d, on_event)
        on_event(Log(f"tuned model's decoding is now {d.describe()} ({measured_source(rec)}); "
                     f"written to {', '.join(wrote)}"))
        return True
    finally:
        run.unlock()


def write_generation_config(merged: Path, d: Decoding) -> bool:
    """Set the merged folder's recommended decoding, keeping its other keys."""
    import json

    path = merged / "generation_config.json"
    if not merged.is_dir():
        return False
    g = json.loads(path.read_text()) if path.exists() else {}
    g.update(do_sample=d.temperature > 0, temperature=d.temperature, top_k=d.top_k,
             top_p=d.top_p)
    atomic_write_json(path, g)
    return True


def update_ggufs(run: Run, d: Decoding, on_event: OnEvent) -> list[str]:
    """Rewrite each GGUF's sampling metadata; the ones written, as relative paths."""
    from ..backends.gguf_meta import write_sampling
    from .export import run_ggufs

    done = []
    arts = run.manifest.get("artefacts", {})
    for quant, path in sorted(run_ggufs(run).items()):
        rel = str(path.relative_to(run.path))
        try:
            write_sampling(path, d)
        except (OSError, UserError) as exc:
            on_event(Warning(f"{rel} keeps its old sampling settings ({exc}); the next "
                             f"`ssd-local export {run.name}` writes the measured ones"))
            continue
        extra = {k: v for k, v in arts.get(rel, {}).items() if k not in ("bytes", "sha256")}
        run.record_artefact(rel, **{"quant": quant, **extra})
        done.append(rel)
    return done
