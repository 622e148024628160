"""The paper's minimal degeneracy filter, plus a repetition-loop marker.

Nothing is checked for correctness. Samples are *marked*, never hidden:
- ``degenerate = "empty"``: nothing but whitespace;
- ``degenerate = "stub"``: a single non-blank line;
- ``looped = True``: the answer ends in a repetition loop (the paper keeps these; training
  can drop them on request).
"""

from __future__ import annotations

import re

_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def degeneracy(text: str) -> str | None:
    stripped = text.strip()
    if not stripped:
        return "empty"
    if sum(1 for line in stripped.splitlines() if line.strip()) <= 1:
        return "stub"
    return None


def is_looped(text: str, min_repeats: int = 4, min_span: int = 200) -> bool:
    """True when the end of ``text`` is one unit (a run of characters, at most 400 long)
    repeated at least ``min_repeats`` times back to back, covering ``min_span`` characters
    or more. Catches 'x = 1\\nx = 1\\n...' and word loops, ignores normal code."""
    tail = text.rstrip()[-4000:]
    n = len(tail)
    for period in range(1, min(400, n // min_repeats) + 1):
        unit = tail[n - period:]
        if not unit.strip():
            continue
        reps, pos = 1, n - period
        while pos - period >= 0 and tail[pos - period:pos] == unit:
            reps += 1
            pos -= period
        if reps >= min_repeats and reps * period >= min_span:
            return True
    return False


def extract_code(text: str) -> str | None:
    """The last fenced code block (what the paper's harness evaluates), else None. An
    unclosed final fence (an answer cut at the length limit) counts as a block."""
    blocks = _FENCE_RE.findall(text)
    if blocks:
        return blocks[-1]
    last = text.rfind("```")
    if last >= 0 and text.count("```") % 2 == 1:
        body = text[last + 3:]
        nl = body.find("\n")
        return body[nl + 1:] if nl >= 0 else None
    return None


def mark(text: str) -> dict[str, object]:
    return {"degenerate": degeneracy(text), "looped": is_looped(text),
            "has_code": extract_code(text) is not None}
