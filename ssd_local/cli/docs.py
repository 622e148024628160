"""The README's tables of defaults, generated from the config fields and the presets, so
the documentation never restates a default by hand. ``make docs`` rewrites the blocks
between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; a test checks they are current.

    python -m ssd_local.cli.docs README.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ..config import (PRESETS, CompareConfig, EvalConfig, ExportConfig, HandoffConfig,
                      LensConfig, PushConfig, SampleConfig, ServeConfig, TrainConfig, help_of)

COMMANDS = (("sample", SampleConfig), ("train", TrainConfig), ("export", ExportConfig),
            ("export --to", HandoffConfig), ("push", PushConfig),
            ("serve", ServeConfig), ("eval", EvalConfig), ("compare", CompareConfig),
            ("lens", LensConfig))


def _default(value: object) -> str:
    if value is None:
        return "(see text)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _help(text: str) -> str:
    return text.replace("|", "\\|")


def options_markdown() -> str:
    """One table per command: every option, its default, what it does. ``compare`` lists
    only what it adds to ``eval``; ``distill`` takes the options of every stage."""
    out = []
    for name, cls in COMMANDS:
        own = [f for f in fields(cls) if f.metadata.get("cli", True)]
        if cls is CompareConfig:
            own = [f for f in own if f.name not in {g.name for g in fields(EvalConfig)}]
        out.append(f"`ssd-local {name}`" + (" (and every option of `eval`)"
                                            if cls is CompareConfig else "") + ":\n")
        out.append("| option | default | |\n|---|---|---|")
        for f in own:
            flag = "--" + f.name.replace("_", "-")
            d = None if f.default is MISSING else f.default
            out.append(f"| `{flag}` | {_default(d)} | {_help(help_of(cls, f))} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def presets_markdown() -> str:
    rows = ["| preset | T_train/top-k/top-p | T_eval/top-k/top-p | base model's best |",
            "|---|---|---|---|"]
    for p in PRESETS.values():
        label = p.name + (" (not in the paper)" if not p.description.startswith("paper")
                          else f" ({p.description.removeprefix('paper: ')})")
        rows.append(f"| {label} | {_short(p.train)} | {_short(p.eval)} | {_short(p.base)} |")
    return "\n".join(rows) + "\n"


def _short(d: object) -> str:
    return d.short().replace("-", "off")  # type: ignore[attr-defined]


BLOCKS = {"options": options_markdown, "presets": presets_markdown}


def render(text: str) -> str:
    """``text`` with every generated block brought up to date."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)
    return text


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        path.write_text(render(path.read_text()))
