"""The sandbox with real subprocesses: judging, early exits, and the protections (files,
time, memory, processes, network, output). Only upper bounds on time are checked (that a
kill happened), never speed.

What to expect from the confinement is asked of the kernel itself (:func:`_kernel`), not of
the sandbox's own report: a layer the kernel offers must work, and a test may skip only
where the kernel really lacks the feature (the reason names it)."""

from __future__ import annotations

import ast
import ctypes
import errno
import functools
import marshal
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ssd_local.app.evaluation import sandbox as sb
from ssd_local.app.evaluation.sandbox import Job, Limits

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs a POSIX system")
LINUX = sys.platform.startswith("linux")
NEWUSER, NEWNET, NEWPID = 0x10000000, 0x40000000, 0x20000000  # CLONE_NEW*


# -- what the kernel offers, probed independently of the sandbox -------------------------------
@dataclass(frozen=True)
class Kernel:
    root: bool
    can_drop: bool  # root holding CAP_SETUID, CAP_SETGID and CAP_DAC_OVERRIDE
    landlock_abi: int  # 0: none
    landlock_why: str  # why there is none
    userns: bool  # unshare(NEWUSER|NEWNET|NEWPID) as an unprivileged user (nobody, as root)
    root_ns: bool  # as root: unshare(NEWNET|NEWPID)
    ns_why: str
    subreaper: bool  # prctl(PR_SET_CHILD_SUBREAPER)
    sandbox_exec: bool  # macOS

    @property
    def namespaces(self) -> bool:
        """Network and pid namespaces, one way or the other."""
        return self.userns or self.root_ns


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _in_child(fn) -> int:
    """Run ``fn() -> errno`` in a forked child (what it changes dies with it); 0 = success."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(min(int(fn()), 255))
        except BaseException:
            os._exit(255)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _unshare(flags: int, as_nobody: bool) -> int:
    lib = _libc()
    if as_nobody:
        import pwd

        try:
            pw = pwd.getpwnam("nobody")
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            uid = gid = 65534
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    return 0 if lib.unshare(ctypes.c_int(flags)) == 0 else ctypes.get_errno()


def _caps() -> int:
    try:
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return 0


def _landlock() -> tuple[int, str]:
    """landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION): the ABI or why not."""
    lib = _libc()
    abi = lib.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi >= 1:
        return int(abi), ""
    return 0, f"landlock_create_ruleset failed: {_errno_name(ctypes.get_errno())}"


@functools.lru_cache(maxsize=None)
def _kernel() -> Kernel:
    root = os.geteuid() == 0
    if not LINUX:
        return Kernel(root, False, 0, f"no Landlock on {sys.platform}", False, False,
                      f"no namespaces on {sys.platform}", False,
                      os.path.exists("/usr/bin/sandbox-exec"))
    abi, ll_why = _landlock()
    user_err = _in_child(lambda: _unshare(NEWUSER | NEWNET | NEWPID, as_nobody=root))
    root_err = _in_child(lambda: _unshare(NEWNET | NEWPID, as_nobody=False)) if root else -1
    why = f"unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWPID) failed: {_errno_name(user_err)}"
    if root:
        why += f"; as root unshare(CLONE_NEWNET|CLONE_NEWPID) failed: {_errno_name(root_err)}"
    reaper = _in_child(lambda: 0 if _libc().prctl(ctypes.c_int(36), ctypes.c_ulong(1),
                                                  ctypes.c_ulong(0), ctypes.c_ulong(0),
                                                  ctypes.c_ulong(0)) == 0
                       else ctypes.get_errno()) == 0
    caps = _caps()
    can_drop = root and all(caps >> c & 1 for c in (1, 6, 7))
    return Kernel(root, can_drop, abi, ll_why, user_err == 0, root_err == 0, why, reaper, False)


def _confines_writes() -> str:
    """Why writes cannot be confined here ("" when they can)."""
    k = _kernel()
    if k.landlock_abi or k.sandbox_exec:
        return ""
    return "the kernel offers no Landlock (" + k.landlock_why + ")"


def _blocks_tcp() -> str:
    """Why TCP cannot be blocked here ("" when it can)."""
    k = _kernel()
    if k.namespaces or k.landlock_abi >= 4 or k.sandbox_exec:
        return ""
    return (f"the kernel offers no network namespace ({k.ns_why}) and no Landlock ABI >= 4 "
            f"(ABI {k.landlock_abi}: {k.landlock_why or 'no TCP rules before ABI 4'})")


def _contains_processes() -> str:
    """Why a sample's escaped processes cannot be contained here ("" when they can)."""
    k = _kernel()
    if k.namespaces or k.subreaper:
        return ""
    return (f"the kernel offers no pid namespace ({k.ns_why}) and no "
            "prctl(PR_SET_CHILD_SUBREAPER)")


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
def no_leftover_dirs(monkeypatch, tmp_path_factory):
    """Every job's temp dir is removed. This test's jobs get a temp root of their own
    (searchable by nobody), so sandboxes that other processes run meanwhile (an eval, a
    second test run) do not count as leftovers."""
    tmp_path_factory.getbasetemp()  # pytest's own dirs stay where they are
    root = tempfile.mkdtemp(prefix="sbx-test-root-")
    os.chmod(root, 0o711)
    monkeypatch.setattr(tempfile, "tempdir", root)
    before = _sandbox_dirs()
    try:
        yield
        assert _sandbox_dirs() - before == set()
    finally:
        monkeypatch.undo()
        shutil.rmtree(root, ignore_errors=True)


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


def test_samples_get_postponed_annotations():
    """As the sandbox always compiled them: annotation-only names are not evaluated, so
    LeetCode signatures need no ``typing`` import (and no NameError)."""
    import __future__

    from ssd_local.app.evaluation.sandbox import judge

    assert judge.FUTURE_ANNOTATIONS == __future__.annotations.compiler_flag
    code = ("def f(x: Undefined) -> 'List[int]':\n    return x\n\n"
            "assert f(1) == 1\nassert f.__annotations__['x'] == 'Undefined'\n")
    assert sb.run(Job("script", code)).passed


def test_answers_compare_as_judges_do():
    """The child's comparisons, called here directly (they are plain stdlib modules)."""
    from ssd_local.app.evaluation.sandbox import answers

    assert answers.same_text("1 2  \n\n", "1 2")
    assert answers.same_text("0.33333333", "0.333333334")
    assert not answers.same_text("0.334", "0.333")
    assert answers.same_return((1, [2.0000000001]), [1, [2]])
    assert answers.same_return({1: True}, {"1": True})
    assert not answers.same_return([1, 2], [1, 2, 3])
    assert not answers.same_return(object(), None)


def test_call_leaving_early_is_not_passing():
    code = "class Solution:\n    def f(self, x):\n        import sys\n        sys.exit(0)\n"
    out = sb.run(Job("call", code, ({"input": "1", "output": "1"},), "f"))
    assert (out.passed, out.status) == (False, "exited")


# -- protections ------------------------------------------------------------------------------
def test_protections_describe_every_area():
    prot = sb.protections()
    assert set(prot) == {"process", "filesystem", "network", "processes", "user"}
    assert all(isinstance(v, str) and v for v in prot.values())


def test_protections_agree_with_the_kernel():
    k, prot = _kernel(), sb.protections()
    if k.landlock_abi >= 1:
        assert prot["filesystem"].startswith("landlock: writes only"), prot
        assert "reads only" in prot["filesystem"], prot
    elif k.sandbox_exec:
        assert prot["filesystem"].startswith("sandbox-exec"), prot
    else:
        assert prot["filesystem"].startswith("NOT confined"), prot
    if k.namespaces:
        assert prot["network"] == "none: own network namespace", (prot, k)
    elif k.landlock_abi >= 4:
        assert prot["network"].startswith("landlock: TCP"), prot
    elif LINUX:
        assert prot["network"].startswith("NOT blocked"), prot
    if k.namespaces:
        assert prot["processes"].startswith("own pid namespace"), (prot, k)
    elif k.subreaper:
        assert prot["processes"].startswith("no pid namespace: the runner kills"), prot
    assert ("cannot signal outside processes" in prot["processes"]) == (k.landlock_abi >= 6)
    if k.can_drop:
        assert prot["user"].startswith("runs as nobody"), prot
    elif not k.root:
        assert prot["user"].startswith("runs as the current user"), prot
        if k.userns:
            assert prot["user"].endswith("in its own user namespace"), prot


def test_root_is_dropped_to_nobody():
    if not _kernel().root:
        pytest.skip("not running as root: there is nothing to drop")
    if not _kernel().can_drop:
        pytest.skip("root here lacks CAP_SETUID, CAP_SETGID or CAP_DAC_OVERRIDE")
    # nobody's uid, or the overflow uid where it runs in a user namespace without a map
    code = ("import os\n"
            "assert 0 not in (os.getuid(), os.geteuid(), os.getgid(), os.getegid())\n"
            "assert os.getgroups() == []\n")
    out = sb.run(Job("script", code))
    assert out.passed, out


def test_the_child_modules_are_stdlib_only_and_compiled_once():
    """The child runs ``python -I -S``: its modules may import the standard library and
    each other, never ``ssd_local`` (nor anything installed). They are compiled without
    docstrings and asserts (``optimize=2``), so they must not rely on ``assert``."""
    from ssd_local.app.evaluation.sandbox import host, runner

    here = Path(host.__file__).resolve().parent
    assert set(host.CHILD_MODULES) == set(sb.KINDS) == set(runner.KIND_MODULES)
    for kind, names in host.CHILD_MODULES.items():
        assert names[-1] == "runner" and runner.KIND_MODULES[kind] in names
        for i, name in [(0, "boot"), *enumerate(names)]:
            tree = ast.parse((here / f"{name}.py").read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                assert not isinstance(node, ast.Assert), (name, node.lineno)
                if isinstance(node, ast.ImportFrom) and node.level:
                    assert node.level == 1, (name, node.module)
                    targets = [node.module] if node.module else [a.name for a in node.names]
                    assert set(targets) <= set(names[:i]), (kind, name, targets)  # loaded first
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                        else [node.module or ""]
                    for m in mods:
                        assert m.split(".")[0] in sys.stdlib_module_names, (name, m)
        blob = host.runner_code(kind)
        assert blob is host.runner_code(kind)
        cut = 10 + int(blob[:10])
        assert marshal.loads(blob[10:cut]).co_filename == str(here / "boot.py")
        mods = marshal.loads(blob[cut + 10:cut + 10 + int(blob[cut:cut + 10])])
        assert [n for n, _ in mods] == list(names)
        assert [c.co_filename for _, c in mods] == [str(here / f"{n}.py") for n in names]


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
        if _confines_writes() and os.geteuid() != 0:
            pytest.skip("writes cannot be confined here: " + _confines_writes())
        assert not outside.exists()
        assert not in_home.exists()
    finally:
        outside.unlink(missing_ok=True)
        in_home.unlink(missing_ok=True)


def test_reads_are_confined_where_the_kernel_has_landlock(tmp_path):
    if not _kernel().landlock_abi:
        pytest.skip("reads cannot be confined: the kernel offers no Landlock ("
                    + _kernel().landlock_why + ")")
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
    if _contains_processes():
        for p in _with_marker(marker):
            p.kill()
        pytest.skip(_contains_processes())
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
    if _blocks_tcp():
        pytest.skip("the network cannot be blocked here: " + _blocks_tcp())
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


def test_udp_is_blocked_by_the_network_namespace():
    """Landlock covers TCP only: UDP is blocked by the network namespace alone."""
    if not _kernel().namespaces:
        pytest.skip("UDP cannot be blocked here: the kernel offers no network namespace ("
                    + _kernel().ns_why + ")")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        port = server.getsockname()[1]
        code = ("import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.sendto(b'x', ('127.0.0.1', {port}))\n")
        out = sb.run(Job("script", code))
        assert (out.passed, out.status) == (False, "error"), out
        assert out.error == "OSError", out  # the namespace's loopback is down
        with pytest.raises(BlockingIOError):
            server.recv(16)


def test_the_sample_is_pid_1_of_its_own_pid_namespace():
    if not _kernel().namespaces:
        pytest.skip("no pid namespace: the kernel offers none (" + _kernel().ns_why + ")")
    assert sb.run(Job("script", "import os\nassert os.getpid() == 1, os.getpid()\n")).passed


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
    if not os.path.isdir("/proc"):
        pytest.skip("needs the host's /proc visible from the sandbox: this system has none")
    if _contains_processes():
        pytest.skip(_contains_processes())  # the marked processes would outlive the jobs
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
