"""Which decoding a model gets when the user names none: the one place that decides it for
``eval``, ``compare``, ``serve`` and the exports.

- a run's tuned model: the best decoding ``compare`` measured (written to the run, with the
  benchmark, problems and pass@1 it had), else the T_eval recorded when it was fused (the
  preset's, or the user's ``--t-eval``), else its preset's T_eval;
- a base model: its own ``generation_config.json`` where it says (``do_sample: false`` is
  greedy), a GGUF's ``general.sampling.*`` metadata, else the paper's base setting for its
  family;
- a run's distillation settings (T_train/top-k/top-p): its recorded sample config.

Explicit values always win over these: ``DecodingOptions.over(default)``."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ..config import Decoding, detect_preset, preset
from ..errors import UserError
from .models import ModelRef
from .runs import Run

MEASURED = "measured_decoding"  # the manifest key ``compare`` writes (app/measured.py)


@dataclass(frozen=True)
class Chosen:
    decoding: Decoding
    source: str  # in words: where the values came from

    def describe(self) -> str:
        return f"{self.decoding.describe()} ({self.source})"


def run_preset(run: Run) -> str | None:
    return run.manifest.get("config", {}).get("sample", {}).get("preset")


def measured_source(m: dict[str, Any]) -> str:
    """``compare``'s record in words: what was measured, on what, with what result."""
    p1 = m.get("pass@1")
    greedy = "greedy; " if float(m["decoding"]["temperature"]) == 0 else ""
    return (f"{greedy}measured best of `compare` on {m.get('benchmark')}: pass@1 "
            + (f"{100 * p1:.1f}%" if p1 is not None else "?")
            + f" over {m.get('problems')} problems x {m.get('samples_per_problem')} samples"
            + (f", {str(m['measured_at'])[:10]}" if m.get("measured_at") else ""))


def tuned(run: Run) -> Chosen:
    """The decoding of a run's tuned model."""
    m = run.manifest.get(MEASURED)
    if m and m.get("decoding"):
        return Chosen(Decoding.from_dict(m["decoding"]), measured_source(m))
    name = preset(run_preset(run)).name
    unmeasured = f"not measured yet; `ssd-local compare {run.name}` finds the best"
    d = run.manifest.get("recommended_decoding")
    if d and Decoding.from_dict(d) != preset(name).eval:
        return Chosen(Decoding.from_dict(d), f"set at fuse time (--t-eval); {unmeasured}")
    return Chosen(preset(name).eval, f"the {name} preset's T_eval; {unmeasured}")


def train_of(run: Run) -> Chosen:
    """The run's distillation settings: how its samples were drawn (T_train/top-k/top-p)."""
    s = run.manifest.get("config", {}).get("sample", {})
    if all(s.get(k) is not None for k in ("temperature", "top_k", "top_p")):
        return Chosen(Decoding.from_dict(s), "the run's own sampling settings (T_train)")
    name = preset(run_preset(run)).name
    return Chosen(preset(name).train, f"the {name} preset's T_train")


def base(model: ModelRef) -> Chosen:
    """A base model's own recommended decoding."""
    name = detect_preset(model.name)
    if model.kind == "hf":
        gc = model.path / "generation_config.json"
        if gc.exists():
            g = json.loads(gc.read_text())
            k, p = int(g.get("top_k", 0) or 0), float(g.get("top_p", 1.0) or 1.0)
            if g.get("do_sample") is False:
                return Chosen(Decoding(0.0, k, p), "the model's generation_config.json "
                                                   "(greedy)")
            if "temperature" in g:
                return Chosen(Decoding(float(g["temperature"]), k, p),
                              "the model's generation_config.json")
    if model.kind == "gguf":
        own = gguf_decoding(model)
        if own is not None:
            return own
    return Chosen(preset(name).base, f"the paper's base setting ({name} preset)")


def gguf_decoding(model: ModelRef) -> Chosen | None:
    """A GGUF's ``general.sampling.*`` temperature/top-k/top-p, when it has them."""
    from ..backends.gguf_meta import PREFIX, read_sampling

    try:
        s = read_sampling(model.path)
    except (OSError, ValueError, UserError, struct.error):  # not a GGUF we can read
        return None
    if PREFIX + "temp" not in s:
        return None
    return Chosen(Decoding(round(float(s[PREFIX + "temp"]), 6), int(s.get(PREFIX + "top_k", 0)),
                           round(float(s.get(PREFIX + "top_p", 1.0)), 6)),
                  "the GGUF's general.sampling metadata")


def base_of(run: Run) -> Chosen:
    """The decoding of a run's base model: its preset's base setting."""
    name = preset(run_preset(run)).name
    return Chosen(preset(name).base, f"the paper's base setting ({name} preset)")
