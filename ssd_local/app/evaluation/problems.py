"""The one problem shape every benchmark is turned into, and the two user file formats.

Three kinds of check, all run in the sandbox:
- ``script``: HumanEval shape. The program is ``prefix + solution + test`` followed by
  ``check(entry_point)``; the sample passes when that program finishes without an error.
- ``stdio``: the solution is a program; each test feeds ``input`` on standard input and
  compares standard output with ``output`` (whitespace at line ends and trailing blank lines
  ignored, numbers compared with a small tolerance).
- ``call``: LeetCode style (LiveCodeBench functional). ``Solution().<func_name>(*args)`` where
  each test's ``input`` holds one JSON value per line (the arguments) and ``output`` one JSON
  value (the expected result).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ...errors import UserError

KINDS = ("script", "stdio", "call")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # the user message the model answers (the whole problem statement)
    kind: str  # script | stdio | call
    prefix: str = ""  # script: code placed before the solution (HumanEval: the prompt)
    test: str = ""  # script: test code defining check(candidate)
    entry_point: str = ""  # script: the function handed to check()
    tests: tuple[dict[str, str], ...] = ()  # stdio/call: {"input": ..., "output": ...}
    func_name: str = ""  # call: the method of class Solution
    starter_code: str = ""  # shown to the model when the benchmark has one
    difficulty: str | None = None  # easy | medium | hard where the benchmark says
    statement: str = ""  # the raw problem text (contamination checks); default: prompt
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def text(self) -> str:
        return self.statement or self.prompt


# -- the user's files (``eval --problems FILE --completions FILE``) ---------------------------
def _jsonl(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UserError(f"{what} file '{path}' not found; pass a JSONL file")
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not UTF-8 JSONL ({exc}); save it as UTF-8 JSON lines") \
            from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be "
                            "one JSON object") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: each line must be a JSON object")
        yield lineno, obj


def problem_from_dict(obj: dict[str, Any], where: str = "") -> Problem:
    """HumanEval shape (task_id, prompt, entry_point, test) or stdin/stdout shape
    (task_id, question, tests: [{input, output}])."""
    at = f"{where}: " if where else ""
    tid = obj.get("task_id")
    if tid in (None, ""):
        raise UserError(f"{at}no task_id; every problem needs a unique task_id")
    tid = str(tid)
    if all(isinstance(obj.get(k), str) for k in ("prompt", "entry_point", "test")):
        return Problem(tid, humaneval_prompt(obj["prompt"]), "script", prefix=obj["prompt"],
                       test=obj["test"], entry_point=obj["entry_point"],
                       difficulty=obj.get("difficulty"), statement=obj["prompt"])
    if isinstance(obj.get("question"), str) and isinstance(obj.get("tests"), list):
        tests = []
        for i, t in enumerate(obj["tests"]):
            if not (isinstance(t, dict) and isinstance(t.get("input"), str)
                    and isinstance(t.get("output"), str)):
                raise UserError(f"{at}task {tid}: tests[{i}] must be an object with string "
                                "fields input and output")
            tests.append({"input": t["input"], "output": t["output"]})
        if not tests:
            raise UserError(f"{at}task {tid}: no tests; add at least one {{input, output}}")
        func = obj.get("func_name") or ""
        starter = obj.get("starter_code") or ""
        kind = "call" if func else "stdio"
        return Problem(tid, stdio_prompt(obj["question"], starter, kind), kind,
                       tests=tuple(tests), func_name=func, starter_code=starter,
                       difficulty=obj.get("difficulty"), statement=obj["question"])
    raise UserError(f"{at}task {tid}: unknown problem shape; use HumanEval fields (prompt, "
                    "entry_point, test) or stdin/stdout fields (question, tests)")


def load_problems_file(path: Path) -> list[Problem]:
    out: dict[str, Problem] = {}
    for lineno, obj in _jsonl(path, "problems"):
        p = problem_from_dict(obj, f"{path}:{lineno}")
        if p.task_id in out:
            raise UserError(f"{path}:{lineno}: duplicate task_id '{p.task_id}'")
        out[p.task_id] = p
    if not out:
        raise UserError(f"{path} holds no problems")
    return list(out.values())


def load_completions_file(path: Path, problems: list[Problem]) -> dict[str, list[str]]:
    """``{task_id: [completion, ...]}``; several lines per task are several samples."""
    known = {p.task_id for p in problems}
    out: dict[str, list[str]] = {}
    for lineno, obj in _jsonl(path, "completions"):
        tid, comp = obj.get("task_id"), obj.get("completion")
        if tid in (None, "") or not isinstance(comp, str):
            raise UserError(f'{path}:{lineno}: each line needs "task_id" and a string '
                            '"completion"')
        tid = str(tid)
        if tid not in known:
            raise UserError(f"{path}:{lineno}: task_id '{tid}' is not in the problems file")
        out.setdefault(tid, []).append(comp)
    if not out:
        raise UserError(f"{path} holds no completions")
    return out


# -- how the model is asked -------------------------------------------------------------------
def humaneval_prompt(code_prompt: str) -> str:
    return ("Complete the following Python function. Reply with the whole function (and any "
            "imports it needs) in one markdown code block.\n\n```python\n"
            + code_prompt.rstrip() + "\n```")


def stdio_prompt(question: str, starter_code: str, kind: str) -> str:
    q = question.strip()
    if kind == "call" or starter_code.strip():
        return (q + "\n\nWrite the solution in Python, starting from this code, and give the "
                "complete code in one markdown code block:\n```python\n"
                + starter_code.rstrip() + "\n```")
    return (q + "\n\nWrite a Python 3 program that reads the input from standard input and "
            "prints the answer to standard output. Do not test it on the examples inside the "
            "program. Give the complete program in one markdown code block.")
