"""Configs of the hand-off commands: ``export RUN --to ollama|lmstudio`` (a run's GGUF into
the tool a user already has) and ``push RUN ORG/NAME`` (the GGUFs and a model card to the
Hugging Face Hub). Each default is written once, here, with its help."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError
from .parts import QUANT_TYPES, opt, require_choice

HANDOFF_TARGETS = ("ollama", "lmstudio")
# LM Studio files models under publisher/model/; ours go under this publisher by default.
LMSTUDIO_PUBLISHER = "ssd-local"
_LMSTUDIO_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
# Ollama's own rule (types/model/name.go): [NAMESPACE/]MODEL[:TAG], no '.' in a namespace
_OLLAMA_NAME = re.compile(r"^(\w[\w-]*/)?\w[\w.-]*(:\w[\w.-]{0,127})?$", re.ASCII)


@dataclass(frozen=True)
class HandoffConfig:
    to: str | None = opt(None, "after exporting, hand the GGUF of the first --quant type to "
                         "a local tool: ollama (writes RUN/ollama/Modelfile with the run's "
                         "decoding and runs `ollama create`, or prints that command) or "
                         "lmstudio (links it into LM Studio's models folder, or runs `lms "
                         "import`)", choices=HANDOFF_TARGETS)
    name: str | None = opt(None, "the model's name there: Ollama's model name (default: the "
                           "run's name), or LM Studio's publisher/model folder (default: "
                           f"{LMSTUDIO_PUBLISHER}/RUN)", metavar="NAME")
    lmstudio_models: str | None = opt(None, "LM Studio's models folder (default: the one LM "
                                      "Studio uses: downloadsFolder in the settings.json of "
                                      "its home, which is LMSTUDIO_HOME, the folder named in "
                                      "~/.lmstudio-home-pointer, ~/.cache/lm-studio or "
                                      "~/.lmstudio; else that home's models/)", metavar="DIR")

    def validate(self) -> None:
        require_choice(self.to, HANDOFF_TARGETS, "--to target")
        if self.name is None:
            return
        if self.to == "lmstudio" and not _LMSTUDIO_NAME.match(self.name):
            raise UserError(f"--name {self.name!r} is not a publisher/model pair for LM "
                            f"Studio; use e.g. --name {LMSTUDIO_PUBLISHER}/my-coder")
        if self.to == "ollama" and not _OLLAMA_NAME.match(self.name):
            raise UserError(f"--name {self.name!r} is not an Ollama model name; use letters, "
                            "digits, '.', '_' or '-', optionally NAMESPACE/NAME and :TAG")


@dataclass(frozen=True)
class PushConfig:
    quant: str | None = opt(None, "which of the run's GGUFs to upload, comma-separated "
                            "(default: every one it has)", metavar="TYPES")
    merged: bool = opt(False, "also upload RUN/merged (the transformers folder: config, "
                       "safetensors, tokenizer) at the repo's root, so transformers loads "
                       "the repo directly")
    private: bool = opt(False, "create the repo as private (needs a token, HF_TOKEN or `hf "
                        "auth login`; a repo that exists keeps its visibility)")

    def quants(self) -> list[str] | None:
        if self.quant is None:
            return None
        qs = list(dict.fromkeys(q.strip().lower() for q in self.quant.split(",")
                                if q.strip()))
        bad = [q for q in qs if q not in QUANT_TYPES]
        if bad or not qs:
            raise UserError(f"unknown quant type {', '.join(bad) or '(none)'}; choose from "
                            + ", ".join(QUANT_TYPES))
        return qs

    def validate(self) -> None:
        self.quants()
