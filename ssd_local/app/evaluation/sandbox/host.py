"""Host side: one job's life in the parent. Learn the host's facts once (site-packages,
whether to drop root, macOS's wrapper), build the child's command and stdin, launch it in
its own session, wait for it (or the deadline, or a cancel), kill its whole group, read
its one result and turn it into an :class:`Outcome`.

The child's code is the child-side modules of this package (``CHILD_MODULES``: those its
job's kind needs), compiled once per host process with their real filenames and sent
marshalled on the child's stdin ahead of the job: compiling them in every job would cost
more than starting the interpreter does.
"""

from __future__ import annotations

import marshal
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, Sequence

from ....config import SandboxLimits as Limits

KINDS = ("script", "stdio", "call")
GRACE_S = 1.0  # the parent's backstop after the runner's own deadline
MARK = "ssd-sbx-"  # prefix of the job's temp dir and tag on the child's command line
# The child-side modules each kind of job gets, in import order (a script job, the most
# common, skips what judging output and return values takes).
CHILD_MODULES = {"script": ("confine", "judge", "runner"),
                 "stdio": ("confine", "answers", "judge", "stdio", "runner"),
                 "call": ("confine", "answers", "judge", "call", "runner")}
# The child's stdin: a 10-digit length and the marshalled code of ``boot.py`` (which BOOT
# runs), a 10-digit length and the marshalled ``((name, code), ...)`` of the modules above
# (which boot.py loads), then the marshalled job (which runner.py reads).
BOOT = "import marshal,os;exec(marshal.loads(os.read(0,int(os.read(0,10)))))"


@dataclass(frozen=True)
class Job:
    kind: str  # script | stdio | call
    code: str  # script: the whole program; stdio/call: the solution
    tests: tuple[dict[str, str], ...] = ()  # stdio/call: {"input": ..., "output": ...}
    func_name: str = ""  # call: Solution().<func_name>, else a top-level function


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed | error | timeout | memory | exited
    error: str | None  # AssertionError, SyntaxError, WrongAnswer, Timeout, MemoryError, ...
    detail: str  # the failing test and expected/got, or the traceback's last line
    runtime_s: float
    stdout: str  # its head; for stdio jobs the output of the last test run
    stderr: str  # its tail (where the traceback is)
    tests_passed: int
    tests_total: int


class Cancel(Protocol):
    def is_set(self) -> bool: ...


# -- the host's facts (once per process) -----------------------------------------------------
@dataclass(frozen=True)
class Host:
    site: tuple[str, ...]  # put on the runner's sys.path
    reads: tuple[str, ...]  # also readable: the venv (a Python the sample starts reads it)
    drop: str  # "" | "full" (root -> nobody) | "dac" (root -> nobody, keeps read access)
    nobody: tuple[int, int]
    wrap: tuple[str, ...]  # macOS: the sandbox-exec command, else empty


_host_cache: Host | None = None
_code_cache: dict[str, bytes] = {}
_lock = threading.Lock()


def _pth_dirs(d: str, name: str) -> list[str]:
    """The plain directory lines of one ``.pth`` file (``import`` lines are skipped)."""
    out = []
    try:
        with open(os.path.join(d, name), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    p = os.path.join(d, line)
                    if os.path.isdir(p):
                        out.append(os.path.normpath(p))
    except (OSError, UnicodeDecodeError):
        pass
    return out


def _site_dirs() -> tuple[str, ...]:
    """The parent's site-packages plus the plain directory lines of their ``.pth`` files."""
    import site

    dirs: list[str] = []
    for d in site.getsitepackages():
        if not os.path.isdir(d):
            continue
        dirs.append(d)
        for name in sorted(os.listdir(d)):
            if name.endswith(".pth"):
                dirs.extend(_pth_dirs(d, name))
    return tuple(dict.fromkeys(dirs))


def _others_can_read(path: str) -> bool:
    """Every ancestor searchable by 'other' and the dir itself readable: what ``nobody`` needs."""
    p = os.path.realpath(path)
    try:
        st = os.stat(p)
        if not (st.st_mode & stat.S_IROTH and st.st_mode & stat.S_IXOTH):
            return False
        while p != os.path.dirname(p):
            p = os.path.dirname(p)
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _has_cap(cap: int) -> bool:
    """Whether this process holds capability ``cap`` (Linux; root may not hold them all)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(x for x in f if x.startswith("CapEff:")).split()[1]
        return bool(int(eff, 16) >> cap & 1)
    except (OSError, StopIteration, ValueError, IndexError):
        return False


def _root_drop(site: tuple[str, ...]) -> tuple[str, tuple[int, int]]:
    """As root: how to drop to ``nobody`` ("full", or "dac" keeping read access where
    nobody cannot read the interpreter; "" when not even that works) and nobody's ids."""
    import pwd

    ids = (65534, 65534)
    try:
        pw = pwd.getpwnam("nobody")
        ids = (pw.pw_uid, pw.pw_gid)
    except KeyError:
        pass
    need = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
            *site}
    readable = all(_others_can_read(p) for p in need)
    drop = "full" if readable or not sys.platform.startswith("linux") else "dac"
    if drop == "dac" and not _has_cap(1):
        drop = ""  # we could not even enter or clean a dir owned by nobody
    return drop, ids


def host() -> Host:
    global _host_cache
    with _lock:
        if _host_cache is None:
            site = _site_dirs()
            drop, ids = "", (65534, 65534)
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                drop, ids = _root_drop(site)
            wrap: tuple[str, ...] = ()
            if sys.platform == "darwin" and os.path.exists("/usr/bin/sandbox-exec"):
                wrap = ("/usr/bin/sandbox-exec",)
            reads = tuple(dict.fromkeys((sys.prefix, sys.exec_prefix,
                                         os.path.dirname(sys.executable))))
            _host_cache = Host(site, reads, drop, ids, wrap)
        return _host_cache


def _compiled() -> dict[str, Any]:
    """Every child module's code object, compiled from this package's files (without their
    docstrings, which every child would load for nothing; the child modules hold no
    ``assert``, and the sample is compiled in the child with the interpreter's level)."""
    here = Path(__file__).resolve().parent
    out = {}
    for name in ("boot", *dict.fromkeys(n for mods in CHILD_MODULES.values() for n in mods)):
        path = here / f"{name}.py"
        out[name] = compile(path.read_text(encoding="utf-8"), str(path), "exec",
                            dont_inherit=True, optimize=2)
    return out


def _chunk(obj: Any) -> bytes:
    blob = marshal.dumps(obj)
    return b"%010d" % len(blob) + blob


def runner_code(kind: str) -> bytes:
    """What the child reads before its job: the boot loader's code, then the code of the
    modules ``kind`` needs; compiled and marshalled once per host process."""
    with _lock:
        if not _code_cache:
            code = _compiled()
            boot = _chunk(code["boot"])
            for k, mods in CHILD_MODULES.items():
                _code_cache[k] = boot + _chunk(tuple((n, code[n]) for n in mods))
        return _code_cache[kind]


# -- one job -----------------------------------------------------------------------------------
def _env(tmp: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def command(h: Host, tmp: str) -> list[str]:
    cmd = [sys.executable, "-I", "-S", "-c", BOOT, MARK + "runner"]
    if h.wrap:  # macOS: the only confinement there is
        real = os.path.realpath(tmp).replace('"', "")
        profile = ("(version 1)(allow default)(deny network*)(deny file-write* (subpath \"/\"))"
                   f"(allow file-write* (subpath \"{real}\") (literal \"/dev/null\"))")
        cmd = [*h.wrap, "-p", profile, *cmd]
    return cmd


def _rmtree(path: str) -> None:
    """Remove the job's dir even when the sample made parts of it read-only."""
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)


def _read_text(f: Any, chars: int, tail: bool) -> str:
    """At most ``chars`` characters: the head of stdout, the tail of stderr (tracebacks)."""
    size = os.fstat(f.fileno()).st_size
    want = chars * 4
    f.seek(max(0, size - want) if tail else 0)
    text = f.read(want).decode("utf-8", "replace")
    return text[-chars:] if tail else text[:chars]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(proc: subprocess.Popen[bytes], pfd: int | None, step: float) -> bool:
    """Whether the runner exited within ``step`` seconds (polled where there is no pidfd)."""
    if pfd is not None:
        poller = select.poll()  # not select(): it fails on fds above 1023
        poller.register(pfd, select.POLLIN)
        return bool(poller.poll(step * 1000))
    if hasattr(os, "waitid"):  # no pidfd: poll, still without reaping
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
            return True
        time.sleep(min(step, 0.005))
        return False
    try:
        proc.wait(timeout=min(step, 0.1))
        return True
    except subprocess.TimeoutExpired:
        return False


def wait(proc: subprocess.Popen[bytes], deadline: float, cancel: Cancel | None) -> str:
    """Wait until the runner exits ("done"), the deadline passes ("timeout") or ``cancel``
    is set ("cancelled"). The runner is left a zombie, so its group id cannot be reused by
    an unrelated process before we kill the group."""
    try:
        pfd: int | None = os.pidfd_open(proc.pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pfd = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if _exited(proc, pfd, min(left, 0.1) if cancel is not None else left):
                return "done"
    finally:
        if pfd is not None:
            os.close(pfd)


def check(job: Job) -> None:
    if job.kind not in KINDS:
        raise ValueError(f"unknown job kind {job.kind!r}; expected one of {', '.join(KINDS)}")


def _call_tests(tests: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """Parsed here, so the runner need not import ``json`` (6 ms a job)."""
    import json

    out: list[dict[str, Any]] = []
    for t in tests:
        try:
            args = [json.loads(x) for x in str(t.get("input", "")).split("\n") if x.strip()]
            out.append({"args": args, "expected": json.loads(str(t.get("output", "null"))),
                        "shown": str(t.get("output", ""))[:400]})
        except ValueError as exc:
            out.append({"bad": f"the test is not JSON ({exc})"[:300]})
    return out


def _spec(job: Job, limits: Limits, h: Host, tmp: str, fd: int) -> dict[str, Any]:
    """The job as the child receives it (marshalled: plain values only)."""
    tests = _call_tests(job.tests) if job.kind == "call" else [dict(t) for t in job.tests]
    return {"kind": job.kind, "code": job.code, "tests": tests, "func_name": job.func_name,
            "tmp": tmp, "fd": fd, "ppid": os.getpid(), "path": list(h.site),
            "reads": list(h.reads), "drop": h.drop, "nobody": list(h.nobody),
            "limits": {f.name: getattr(limits, f.name) for f in fields(Limits)}}


def _read_result(fd: int) -> dict[str, Any]:
    """Whatever the runner wrote, without ever blocking (nothing else holds the pipe, but a
    stuck read would hang the whole evaluation)."""
    os.set_blocking(fd, False)
    raw = b""
    try:
        while chunk := os.read(fd, 1 << 16):
            raw += chunk
    except BlockingIOError:
        pass
    try:
        res = marshal.loads(raw) if raw else {}
    except (EOFError, ValueError, TypeError):
        res = {}
    return res if isinstance(res, dict) else {}


def _ending(how: str, res: dict[str, Any], rc: int | None,
            limits: Limits) -> dict[str, Any]:
    """The runner's result, or one made up from how it ended."""
    if how == "timeout":
        return {"status": "timeout", "error": "Timeout",
                "detail": f"killed after {limits.timeout_s:g}s"}
    if res:
        return res
    if rc is not None and rc < 0 and -rc == signal.SIGKILL:
        return {"status": "memory", "error": "Killed",
                "detail": "the sandbox was killed (out of memory?)"}
    return {"status": "error", "error": "SandboxError",
            "detail": f"the sandbox runner failed (exit code {rc})"}


def execute(job: Job, limits: Limits, cancel: Cancel | None
            ) -> tuple[dict[str, Any], str, str, float] | None:
    """Launch the runner, wait, clean up. Returns the runner's result dict (or one made up
    from how it ended), stdout, stderr and the runtime; None when cancelled."""
    h = host()
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=MARK)
    r, w = os.pipe()
    try:
        if h.drop:
            os.chown(tmp, *h.nobody)
        spec = _spec(job, limits, h, tmp, w)
        with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
                tempfile.TemporaryFile() as ferr:
            fin.write(runner_code(job.kind))
            fin.write(marshal.dumps(spec))
            fin.seek(0)
            try:
                proc = subprocess.Popen(command(h, tmp), stdin=fin, stdout=fout,
                                        stderr=ferr, cwd=tmp, env=_env(tmp),
                                        start_new_session=True, pass_fds=(w,))
            finally:
                os.close(w)
                w = -1
            how = wait(proc, t0 + limits.timeout_s + GRACE_S, cancel)
            _kill_group(proc.pid)  # stragglers too (the runner is still a zombie here)
            proc.wait()
            runtime = time.monotonic() - t0
            if how == "cancelled":
                return None
            res = _ending(how, _read_result(r), proc.returncode, limits)
            stdout = res.get("stdout")
            if not isinstance(stdout, str):
                stdout = _read_text(fout, limits.output_chars, tail=False)
            stderr = _read_text(ferr, limits.output_chars, tail=True)
            return res, stdout[:limits.output_chars], stderr, runtime
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        _rmtree(tmp)


def run_job(job: Job, limits: Limits, cancel: Cancel | None) -> Outcome | None:
    """Run and judge one job; None when cancelled."""
    check(job)
    total = 1 if job.kind == "script" else len(job.tests)
    if not total:
        return Outcome(False, "error", "NoTests", "the problem has no tests", 0.0, "", "", 0, 0)
    got = execute(job, limits, cancel)
    if got is None:
        return None
    res, stdout, stderr, runtime = got
    status = str(res.get("status", "error"))
    passed = status == "passed"
    return Outcome(passed=passed, status=status,
                   error=None if passed else str(res.get("error") or status),
                   detail=str(res.get("detail", "")), runtime_s=runtime, stdout=stdout,
                   stderr=stderr,
                   tests_passed=total if passed else min(int(res.get("tests_passed", 0)), total),
                   tests_total=total)


def run(job: Job, limits: Limits = Limits()) -> Outcome:
    """Run one job in its own sandbox and judge it."""
    out = run_job(job, limits, None)
    assert out is not None
    return out
