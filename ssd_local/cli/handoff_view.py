"""The hand-off commands' output: what ``export --to`` did (or the exact command to run)
and what ``push`` uploaded. It renders the core's results only. Paths and commands are
printed unwrapped and without markup, so they can be copied as they are."""

from __future__ import annotations

import shlex
from typing import Any

from .render import console


def _plain(text: str) -> None:
    console().print(text, soft_wrap=True, markup=False, highlight=False)


def handoff_summary(r: Any) -> None:
    console().print(f"[bold green]{r.target}[/]: {r.how}", soft_wrap=True)
    _plain(f"  GGUF: {r.gguf}")
    if r.target == "ollama":
        _plain(f"  Modelfile: {r.path}")
        _plain(f"  decoding: {r.decoding.describe()}")
        if r.ran:
            _plain(f"run it:  ollama run {r.name}")
        else:
            _plain("create it where Ollama is installed:  " + shlex.join(r.command))
            _plain(f"then:  ollama run {r.name}")
    else:
        _plain(f"  in LM Studio as {r.name}: {r.path}")
    for note in r.notes:
        _plain(f"note: {note}")


def push_summary(r: Any) -> None:
    total = sum(n for _, n in r.files)
    console().print(f"[bold green]pushed[/] {len(r.files)} files ({total / 1e6:.1f} MB)",
                    soft_wrap=True)
    _plain(f"  repo: {r.url}" + (" (private)" if r.private else ""))
    for path, n in r.files:
        _plain(f"  {path}: {n / 1e6:.1f} MB")
    _plain(f"  model card: {r.card}")
    if r.commit_url:
        _plain(f"  commit: {r.commit_url}")
