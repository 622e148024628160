"""The contamination guard: a run must not be scored on problems it trained on.

Two signals, on text normalised to lower-case words: the same statement, or a large share
of a problem's word 13-grams (the span used by common contamination studies) found in one
training prompt. Boilerplate sentences that many problems share ("you are given a 0-indexed
integer array nums") are shorter than that, or cover a small share of a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .problems import Problem

NGRAM = 13
SHARE = 0.3  # a problem whose 13-grams are 30% or more inside one training prompt overlaps

_WORD = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class Overlap:
    task_id: str
    prompt_id: str
    share: float  # of the problem's n-grams found in that prompt; 1.0 for the same text


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(ws: list[str], n: int) -> set[int]:
    if len(ws) < n:
        return {hash(tuple(ws))} if ws else set()
    return {hash(tuple(ws[i:i + n])) for i in range(len(ws) - n + 1)}


def find_overlaps(training: Iterable[tuple[str, str]], problems: Sequence[Problem],
                  n: int = NGRAM, share: float = SHARE) -> list[Overlap]:
    """``training``: (prompt_id, text) pairs. Returns the overlapping problems, worst first."""
    index: dict[int, set[str]] = {}
    exact: dict[str, str] = {}
    for pid, text in training:
        ws = words(text)
        exact.setdefault(" ".join(ws), pid)
        for g in _ngrams(ws, n):
            index.setdefault(g, set()).add(pid)
    found = []
    for p in problems:
        ws = words(p.text())
        key = " ".join(ws)
        if key and key in exact:
            found.append(Overlap(p.task_id, exact[key], 1.0))
            continue
        grams = _ngrams(ws, n)
        if not grams:
            continue
        hits: dict[str, int] = {}
        for g in grams:
            for pid in index.get(g, ()):
                hits[pid] = hits.get(pid, 0) + 1
        if hits:
            pid, h = max(hits.items(), key=lambda kv: kv[1])
            if h / len(grams) >= share:
                found.append(Overlap(p.task_id, pid, h / len(grams)))
    return sorted(found, key=lambda o: -o.share)
