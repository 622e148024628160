"""The sandbox with real subprocesses: judging, early exits, and the protections (files,
time, memory, processes, network, output). Only upper bounds on time are checked (that a
kill happened), never speed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from ssd_local.app.evaluation import sandbox as sb
from ssd_local.app.evaluation.sandbox import Job, Limits

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs a POSIX system")


def _sandbox_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("ssd-sbx-")}


def _with_marker(marker: str) -> list[psutil.Process]:
    """Live processes whose command line carries ``marker``."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                    p.info["cmdline"] or ()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _wait_gone(marker: str, within: float = 2.0) -> list[psutil.Process]:
    """Killed processes may take a moment to be reaped; anything alive after that leaked."""
    end = time.monotonic() + within
    while (left := _with_marker(marker)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def _spawn_marked(marker: str, body: str) -> str:
    """Sample code: start a Python child whose command line carries ``marker`` (so the test
    can look for it from outside) and run ``body`` there."""
    return ("import os, sys, subprocess\n"
            f"subprocess.Popen([sys.executable, '-c', {body!r}, {marker!r}])\n")


@pytest.fixture(autouse=True)
def no_leftover_dirs():
    before = _sandbox_dirs()
    yield
    assert _sandbox_dirs() - before == set()


# -- judging ---------------------------------------------------------------------------------
def test_script_pass_and_failures():
    ok = sb.run(Job("script", "def f(x):\n    return x + 1\n\nassert f(1) == 2\nprint('done')\n"))
    assert (ok.passed, ok.status, ok.error, ok.stdout) == (True, "passed", None, "done\n")
    assert (ok.tests_passed, ok.tests_total) == (1, 1)

    wrong = sb.run(Job("script", "assert 1 + 1 == 3, 'math'\n"))
    assert (wrong.passed, wrong.status, wrong.error) == (False, "failed", "AssertionError")
    assert "math" in wrong.detail and "<sample>" in wrong.stderr

    syntax = sb.run(Job("script", "def f(:\n    pass\n"))
    assert (syntax.status, syntax.error) == ("error", "SyntaxError")
    assert "line 1" in syntax.detail

    name = sb.run(Job("script", "print(undefined_name)\n"))
    assert (name.status, name.error) == ("error", "NameError")
    assert "undefined_name" in name.detail


@pytest.mark.parametrize("leave", ["import sys\nsys.exit(0)\n", "exit()\n",
                                   "import os\nos._exit(0)\n"])
def test_leaving_before_the_checks_is_not_passing(leave):
    out = sb.run(Job("script", leave + "assert False, 'the checks'\n"))
    assert not out.passed
    assert out.status == "exited"
    assert out.tests_passed == 0


@pytest.mark.parametrize("code", [
    "a, b = map(int, input().split())\nprint(a + b)\n",
    "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n",
    "print(sum(map(int, open(0).read().split())))\nexit()\n",
    "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))\n",
    "import sys\nsys.stdout.write(str(sum(map(int, sys.stdin.readline().split()))))\n"
    "sys.stdout.flush()\nimport os\nos._exit(0)\n",
])
def test_stdio_reads_stdin_every_way(code):
    tests = ({"input": "1 2\n", "output": "3\n"}, {"input": "10 -4", "output": "6"})
    out = sb.run(Job("stdio", code, tests))
    assert out.passed, out
    assert (out.tests_passed, out.tests_total) == (2, 2)


def test_stdio_wrong_answer_names_the_test():
    tests = ({"input": "2\n", "output": "4\n"}, {"input": "3\n", "output": "9\n"},
             {"input": "4\n", "output": "16\n"})
    out = sb.run(Job("stdio", "n = int(input())\nprint(n + n)\n", tests))
    assert (out.passed, out.status, out.error) == (False, "failed", "WrongAnswer")
    assert out.detail.startswith("test 1:") and "9" in out.detail and "6" in out.detail
    assert (out.tests_passed, out.tests_total) == (1, 3)


def test_stdio_comparison_is_lenient_where_judges_are():
    tests = ({"input": "", "output": "0.3333333\n1 2\n\n\n"},)
    assert sb.run(Job("stdio", "print(1/3)\nprint('1 2   ')\n", tests)).passed
    assert sb.run(Job("stdio", "print(1/3, end=' ')\nprint(1, 2)\n", tests)).passed
    assert not sb.run(Job("stdio", "print(0.334)\nprint(1, 2)\n", tests)).passed


def test_stdio_per_test_timeout_and_nonzero_exit():
    tests = ({"input": "1\n", "output": "1\n"}, {"input": "2\n", "output": "2\n"})
    hang = "n = int(input())\nwhile n == 2:\n    pass\nprint(n)\n"
    out = sb.run(Job("stdio", hang, tests), Limits(timeout_s=5, test_timeout_s=1))
    assert (out.status, out.error, out.tests_passed) == ("timeout", "Timeout", 1)
    assert out.detail.startswith("test 1:")
    failed = sb.run(Job("stdio", "import sys\nprint(input())\nsys.exit(3)\n", tests))
    assert (failed.status, failed.error) == ("error", "SystemExit")


def test_call_leetcode_solution_and_plain_function():
    code = ("class Solution:\n"
            "    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
            "        seen = {}\n"
            "        for i, x in enumerate(nums):\n"
            "            if target - x in seen:\n"
            "                return (seen[target - x], i)\n"
            "            seen[x] = i\n")
    tests = ({"input": "[2,7,11,15]\n9", "output": "[0,1]"},
             {"input": "[3,2,4]\n6", "output": "[1, 2]"})
    out = sb.run(Job("call", code, tests, "twoSum"))
    assert out.passed, out
    assert (out.tests_passed, out.tests_total) == (2, 2)

    func = "def add(a, b):\n    return a + b\n"
    tests = ({"input": "1\n2", "output": "3"}, {"input": "0.1\n0.2", "output": "0.3"},
             {"input": "2\n2", "output": "5"})
    out = sb.run(Job("call", func, tests, "add"))
    assert (out.status, out.error, out.tests_passed) == ("failed", "WrongAnswer", 2)
    assert out.detail.startswith("test 2:")

    missing = sb.run(Job("call", func, tests, "multiply"))
    assert (missing.status, missing.error) == ("error", "NameError")


def test_call_leaving_early_is_not_passing():
    code = "class Solution:\n    def f(self, x):\n        import sys\n        sys.exit(0)\n"
    out = sb.run(Job("call", code, ({"input": "1", "output": "1"},), "f"))
    assert (out.passed, out.status) == (False, "exited")


# -- protections ------------------------------------------------------------------------------
def test_protections_describe_every_area():
    prot = sb.protections()
    assert set(prot) == {"process", "filesystem", "network", "processes", "user"}
    assert all(isinstance(v, str) and v for v in prot.values())


def test_writes_stay_inside_the_temp_dir(tmp_path):
    tmp_path.chmod(0o777)  # so only the sandbox, not file permissions, can stop the write
    outside = tmp_path / f"outside-{uuid.uuid4().hex}.txt"
    in_home = Path.home() / f".ssd-sbx-test-{uuid.uuid4().hex}"
    code = ("import os\n"
            f"for p in ({str(outside)!r}, {str(in_home)!r}):\n"
            "    try:\n"
            "        open(p, 'w').write('x')\n"
            "    except OSError:\n"
            "        pass\n"
            "open('inside.txt', 'w').write('x' * 10)\n"
            "assert open('inside.txt').read() == 'x' * 10\n"
            "os.mkdir('sub')\n"
            "os.chmod('sub', 0)\n"
            "os.chmod('.', 0o500)\n")  # the parent must still clean up
    try:
        out = sb.run(Job("script", code))
        assert out.passed, out
        if "NOT" in sb.protections()["filesystem"] and os.geteuid() != 0:
            pytest.skip("writes are not confined on this machine: "
                        + sb.protections()["filesystem"])
        assert not outside.exists()
        assert not in_home.exists()
    finally:
        outside.unlink(missing_ok=True)
        in_home.unlink(missing_ok=True)


def test_reads_are_confined_when_landlock_says_so(tmp_path):
    if "reads only" not in sb.protections()["filesystem"]:
        pytest.skip("reads are not confined here: " + sb.protections()["filesystem"])
    tmp_path.chmod(0o755)
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    out = sb.run(Job("script", f"print(open({str(secret)!r}).read())\n"))
    assert (out.status, out.error) == ("error", "PermissionError")
    assert "s3cret" not in out.stdout
    # the sample can still import the standard library and site-packages
    assert sb.run(Job("script", "import json, heapq, decimal, numpy\n")).passed


def test_hang_is_killed_with_everything_it_started():
    marker = f"ssd-sbx-test-{uuid.uuid4().hex}"
    code = _spawn_marked(marker, "while True: pass") + "while True:\n    pass\n"
    start = time.monotonic()
    out = sb.run(Job("script", code), Limits(timeout_s=2))
    took = time.monotonic() - start
    assert (out.passed, out.status, out.error) == (False, "timeout", "Timeout")
    assert took < 2 + 3  # killed, not waited out (a bound, not a speed check)
    assert _wait_gone(marker) == []


def test_children_that_leave_the_session_die_with_the_sample():
    marker = f"ssd-sbx-test-{uuid.uuid4().hex}"
    code = ("import os, sys\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
            f"{marker!r}])\n"
            "import time\n"
            "time.sleep(0.5)\n")
    out = sb.run(Job("script", code), Limits(timeout_s=5))
    assert out.passed, out
    if "NOT" in sb.protections()["processes"]:
        for p in _with_marker(marker):
            p.kill()
        pytest.skip("no pid namespace or subreaper here: " + sb.protections()["processes"])
    assert _wait_gone(marker) == []


def test_memory_is_capped():
    out = sb.run(Job("script", "x = bytearray(8 * 2**30)\n"))
    assert (out.passed, out.status, out.error) == (False, "memory", "MemoryError")
    greedy = ("class Solution:\n"
              "    def f(self, x):\n"
              "        block = bytearray(8 * 2**30)\n"
              "        return x\n")
    out = sb.run(Job("call", greedy, ({"input": "1", "output": "1"},), "f"))
    assert (out.passed, out.status) == (False, "memory")
    assert sb.run(Job("script", "assert sum(range(10)) == 45\n")).passed  # the harness is fine


def test_fork_bomb_is_contained():
    marker = f"ssd-sbx-test-{uuid.uuid4().hex}"
    code = (_spawn_marked(marker, "import time; time.sleep(60)")
            + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    start = time.monotonic()
    out = sb.run(Job("script", code), Limits(timeout_s=3))
    assert time.monotonic() - start < 3 + 3
    assert not out.passed and out.status in ("timeout", "error")
    assert _wait_gone(marker) == []
    assert subprocess.run([sys.executable, "-c", "pass"], timeout=30).returncode == 0
    assert sb.run(Job("script", "pass\n")).passed


def test_network_is_blocked():
    if "NOT" in sb.protections()["network"]:
        pytest.skip("the network is not blocked here: " + sb.protections()["network"])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        out = sb.run(Job("script", code))
        assert (out.passed, out.status) == (False, "error")
        assert out.error in ("PermissionError", "OSError", "ConnectionRefusedError", "TimeoutError")
        with pytest.raises(BlockingIOError):
            server.accept()


def test_huge_output_is_capped_and_truncated():
    code = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n"
    out = sb.run(Job("script", code), Limits(output_chars=500))
    assert len(out.stdout) == 500 and set(out.stdout) == {"x"}
    assert (out.status, out.error) == ("error", "OSError")  # 64 MB file-size cap
    big_file = "open('big', 'wb').write(b'x' * (100 << 20))\n"
    assert sb.run(Job("script", big_file)).error == "OSError"


def test_environment_is_scrubbed():
    code = ("import os, sys\n"
            "assert os.environ['HOME'] == os.getcwd(), os.environ\n"
            "assert 'SSD_LOCAL_HOME' not in os.environ\n"
            "assert os.path.basename(os.getcwd()).startswith('ssd-sbx-')\n"
            "assert __name__ == '__main__'\n")
    assert sb.run(Job("script", code)).passed


# -- run_many -------------------------------------------------------------------------------
def test_run_many_yields_every_index_with_bounded_threads():
    jobs = [Job("script", f"assert {i} == {i}\n") for i in range(5)] + [Job("script", "1/0\n")]
    seen: dict[int, sb.Outcome] = {}
    most = 0
    for i, out in sb.run_many(jobs, workers=2):
        seen[i] = out
        most = max(most, sum(t.name.startswith("sandbox-") for t in threading.enumerate()))
    assert sorted(seen) == list(range(6))
    assert all(seen[i].passed for i in range(5)) and seen[5].error == "ZeroDivisionError"
    assert most <= 2


def test_run_many_runs_jobs_at_the_same_time():
    """A handshake through marked processes in /proc that only two jobs running at once can
    finish: each shows "ready", waits for the other's "ready", shows "saw", then waits for
    the other's "saw" (or for the other to have finished). One at a time, the first job
    would wait for the second until it timed out."""
    if "pid namespace" not in sb.protections()["processes"]:
        pytest.skip("needs the host's /proc visible from the sandbox")
    tag = f"ssd-sbx-test-{uuid.uuid4().hex}"

    def job(me: str, other: str) -> Job:
        return Job("script", (
            "import os, sys, subprocess, time\n"
            "def show(mark):\n"
            "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', mark])\n"
            "def seen(mark):\n"
            "    for pid in os.listdir('/proc'):\n"
            "        try:\n"
            "            if mark.encode() in open(f'/proc/{pid}/cmdline', 'rb').read():\n"
            "                return True\n"
            "        except OSError:\n"
            "            pass\n"
            "    return False\n"
            "def wait(cond):\n"
            "    while not cond():\n"
            "        time.sleep(0.02)\n"
            f"show('{tag}-{me}-ready')\n"
            f"wait(lambda: seen('{tag}-{other}-ready'))\n"
            f"show('{tag}-{me}-saw')\n"
            f"wait(lambda: seen('{tag}-{other}-saw') or not seen('{tag}-{other}-ready'))\n"))

    outs = dict(sb.run_many([job("a", "b"), job("b", "a")], Limits(timeout_s=8), workers=2))
    assert outs[0].passed and outs[1].passed, outs
    assert _wait_gone(tag) == []


@pytest.mark.timeout(60)
def test_run_many_cancel_stops_and_kills():
    cancel = threading.Event()
    jobs = [Job("script", "pass\n")] + [Job("script", "import time\ntime.sleep(30)\n")] * 5
    got = []
    for i, out in sb.run_many(jobs, Limits(timeout_s=40), workers=2, cancel=cancel):
        got.append(i)
        cancel.set()
    assert got == [0]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        sb.run(Job("notebook", "pass"))
    assert sb.run(Job("stdio", "print(1)")).error == "NoTests"
