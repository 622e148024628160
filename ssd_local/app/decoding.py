"""Which decoding a model gets when the user names none: the one place that decides it for
``eval``, ``compare``, ``serve`` and the exports.

- a run's tuned model: the T_eval recorded when it was fused (the preset's, or the user's
  ``--t-eval``), else its preset's T_eval;
- a base model: its own ``generation_config.json`` where it says, else the paper's base
  setting for its family.

Explicit values always win over these: ``DecodingOptions.over(default)``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..config import Decoding, detect_preset, preset
from .models import ModelRef
from .runs import Run


@dataclass(frozen=True)
class Chosen:
    decoding: Decoding
    source: str  # in words: where the values came from

    def describe(self) -> str:
        return f"{self.decoding.describe()} ({self.source})"


def run_preset(run: Run) -> str | None:
    return run.manifest.get("config", {}).get("sample", {}).get("preset")


def tuned(run: Run) -> Chosen:
    """The decoding of a run's tuned model."""
    d = run.manifest.get("recommended_decoding")
    if d:
        return Chosen(Decoding.from_dict(d), "recorded at fuse time")
    name = preset(run_preset(run)).name
    return Chosen(preset(name).eval, f"the {name} preset's T_eval")


def base(model: ModelRef) -> Chosen:
    """A base model's own recommended decoding."""
    name = detect_preset(model.name)
    if model.kind == "hf":
        gc = model.path / "generation_config.json"
        if gc.exists():
            g = json.loads(gc.read_text())
            if g.get("do_sample", True) and "temperature" in g:
                return Chosen(Decoding(float(g["temperature"]), int(g.get("top_k", 0) or 0),
                                       float(g.get("top_p", 1.0) or 1.0)),
                              "the model's generation_config.json")
    return Chosen(preset(name).base, f"the paper's base setting ({name} preset)")


def base_of(run: Run) -> Chosen:
    """The decoding of a run's base model: its preset's base setting."""
    name = preset(run_preset(run)).name
    return Chosen(preset(name).base, f"the paper's base setting ({name} preset)")
