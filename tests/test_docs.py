"""The README never restates a default by hand: its generated blocks are current, and every
default it mentions in prose is the config field's default."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

from conftest import ROOT
from ssd_local.cli import docs
from ssd_local.config import (CompareConfig, EvalConfig, ExportConfig, HandoffConfig,
                              LensConfig, PushConfig, SampleConfig, ServeConfig, TrainConfig)

README = ROOT / "README.md"
CLASSES = (SampleConfig, TrainConfig, ExportConfig, ServeConfig, EvalConfig, CompareConfig,
           LensConfig, HandoffConfig, PushConfig)


def test_generated_blocks_are_current():
    text = README.read_text()
    for name in docs.BLOCKS:
        assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text, name
    assert docs.render(text) == text, "README is stale: run `make docs`"


def _defaults() -> dict[str, set[str]]:
    """``--flag`` -> how its defaults are written (several stages may share a flag)."""
    out: dict[str, set[str]] = {}
    for cls in CLASSES:
        for f in fields(cls):
            if f.default is MISSING or f.default is None or isinstance(f.default, bool):
                continue
            d = f.default
            forms = {str(d)} | ({f"{d:g}"} if isinstance(d, float) else set())
            out.setdefault("--" + f.name.replace("_", "-"), set()).update(forms)
    return out


PAIR = re.compile(r"(--[a-z][a-z0-9-]*) ([0-9][\w.,]*|[a-z][\w.,-]*)")
SAID = re.compile(r"`(--[a-z][a-z0-9-]*)`[^`\n]{0,20}?\bdefault:? (?:([0-9][\w.,]*)|`([^`]+)`)")


def prose_defaults(text: str) -> list[tuple[str, str, int]]:
    """(flag, value, line) for each default the prose states: "`--flag VALUE` (default)",
    "by default (`--flag VALUE --other VALUE`)", and "`--flag`, default VALUE" (a number,
    or a backticked value)."""
    out = []
    body = text.split("<!-- options:start -->")[0]
    for n, line in enumerate(body.splitlines(), 1):
        for m in re.finditer(r"`([^`]+)`", line):
            before, after = line[:m.start()], line[m.end():]
            if after.startswith(" (default") or before.endswith("default ("):
                out += [(f, v.rstrip(".,"), n) for f, v in PAIR.findall(m.group(1))]
        out += [(f, (a or b).rstrip(".,"), n) for f, a, b in SAID.findall(line)]
    return out


def test_prose_defaults_match_the_config():
    known = _defaults()
    stated = [x for x in prose_defaults(README.read_text()) if x[0] in known]
    assert stated, "the check found no stated default at all"
    wrong = [f"README:{n}: {f} {v} (the default is {' or '.join(sorted(known[f]))})"
             for f, v, n in stated if v not in known[f]]
    assert wrong == []


def test_the_prose_check_catches_a_wrong_default():
    text = "- LoRA by default (`--lora-rank 8`).\n- `--max-seq-len` (default 2048)\n"
    known = _defaults()
    found = [(f, v) for f, v, _ in prose_defaults(text) if v not in known.get(f, {v})]
    assert found == [("--lora-rank", "8"), ("--max-seq-len", "2048")]
