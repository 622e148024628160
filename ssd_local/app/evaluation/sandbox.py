"""Run model-written Python (buggy, not malicious) without risking the user's machine.

One job = one ``python -I -S`` process running the runner below (stdlib only, it never
imports this package). The parent launches, waits and kills; everything that confines the
sample happens in the runner *before* the sample's first line:

1. as root: become ``nobody`` (``RLIMIT_NPROC`` is not enforced for root). When ``nobody``
   cannot read the interpreter (one installed in root's home), keep one capability for
   reading files, which only counts in the host's user namespace, so that path takes its
   network and pid namespaces as root instead of in a user namespace of its own;
2. ``unshare`` (user,) network and pid namespaces, then fork: the sample is pid 1 of its
   own pid namespace, so the kernel kills all it started when it ends, and it has no
   network (only a loopback that is down). Without a pid namespace the runner becomes a
   child subreaper and kills the sample's whole process tree itself;
3. Landlock: writes only beneath the job's temp dir (and ``/dev/null``), reads only from
   the Python install and system dirs, TCP bind/connect denied (ABI >= 4), signals and
   abstract unix sockets scoped to the sample (ABI >= 6);
4. rlimits: CPU, address space, file size, open files, processes, no core files.

The outer runner enforces the wall deadline and relays one result on a private pipe; a
sample that leaves early (``sys.exit``, ``os._exit``) never reports, so it never passes.
A missing kernel feature weakens the protection instead of failing the run, and
:func:`protections` says plainly what this machine gives.

``-S`` skips ``site`` (about 10 ms of a 12 ms job, mostly ``.pth`` import hooks): the runner
puts the parent's site-packages on ``sys.path`` itself (plain ``.pth`` path lines too, not
``import`` lines) and defines ``exit``/``quit``, so ``numpy`` & co. still import. Hash
randomisation stays on (``-I`` ignores ``PYTHONHASHSEED``), as when running a script.

Call jobs get LeetCode's pre-imported names (``List``, ``deque``, ``heapq``, ...) because its
starter code uses them without importing; stdio jobs get nothing extra.
"""

from __future__ import annotations

import marshal
import os
import queue
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

KINDS = ("script", "stdio", "call")
_GRACE_S = 1.0  # the parent's backstop after the runner's own deadline
_MARK = "ssd-sbx-"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock for the whole job; then everything it started dies
    test_timeout_s: float = 6.0  # per test case (stdio/call)
    memory_mb: int = 4096  # RLIMIT_AS
    file_size_mb: int = 64  # RLIMIT_FSIZE (also caps captured stdout/stderr)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC: processes/threads the sample may add
    output_chars: int = 2000  # stdout/stderr kept in the Outcome


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


# -- the runner: runs in the child, stdlib only, imports kept minimal (startup is the cost) --
_RUNNER = r'''
import os, sys, marshal, resource, time, select
import _signal as signal  # the plain module imports enum: 3 ms a job

LINUX = sys.platform.startswith("linux")
NEWNS_USER, NEWNS_NET, NEWNS_PID = 0x10000000, 0x40000000, 0x20000000
FS_WRITE = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) \
    | (1 << 10) | (1 << 11) | (1 << 12)
FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
FS_FILE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)  # rights that apply to a file
SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc",
               "/proc", "/dev", "/sys", "/nix/store", "/gnu/store")
PRELUDE = dict.fromkeys(("bisect", "collections", "functools", "heapq", "itertools", "math",
                         "operator", "random", "re", "string"))  # modules
PRELUDE.update(dict.fromkeys("Any Callable Deque DefaultDict Dict FrozenSet Generator Iterable "
                             "Iterator List Mapping Optional Sequence Set Tuple Type "
                             "Union".split(), "typing"))
for _mod, _names in (("collections", "Counter OrderedDict defaultdict deque"),
                     ("functools", "cache cmp_to_key lru_cache reduce"),
                     ("heapq", "heapify heappop heappush heappushpop heapreplace nlargest "
                               "nsmallest"),
                     ("bisect", "bisect_left bisect_right insort"),
                     ("itertools", "accumulate chain combinations groupby pairwise "
                                   "permutations product zip_longest"),
                     ("math", "ceil comb floor gcd inf isqrt lcm log2 sqrt")):
    PRELUDE.update(dict.fromkeys(_names.split(), _mod))


class Timeout(BaseException):
    """BaseException so the sample's ``except Exception`` cannot swallow it."""


class ExitChild(BaseException):
    """Unwinds a finished stdio test child to a normal interpreter exit (flushes files)."""


def on_timer(signum, frame):
    raise Timeout()


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def short(s, n=160):
    s = s if isinstance(s, str) else repr(s)
    return s if len(s) <= n else s[:n] + "..."


def become(uid, gid):
    os.setgroups([])
    if hasattr(os, "setresuid"):
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    else:  # macOS: as root these set all three ids
        os.setgid(gid)
        os.setuid(uid)


def file_cap():
    """The capability that lets ``nobody`` keep reading the interpreter: DAC_READ_SEARCH (2)
    where we hold it, else DAC_OVERRIDE (1; Docker's root lacks the first), else None."""
    try:
        with open("/proc/self/status") as f:
            have = int(next(x for x in f if x.startswith("CapPrm:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return None
    return next((c for c in (2, 1) if have >> c & 1), None)


class Quitter:
    """``exit``/``quit`` as ``site`` would define them (it is skipped by ``-S``)."""
    def __init__(self, name):
        self.name = name
    def __repr__(self):
        return "Use %s() to exit" % self.name
    def __call__(self, code=None):
        raise SystemExit(code)


# -- confinement ---------------------------------------------------------------------------
class Sys:
    def __init__(self):
        import ctypes
        self.c = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.syscall.restype = ctypes.c_long

    def prctl(self, *args):
        a = [self.c.c_ulong(x) for x in args] + [self.c.c_ulong(0)] * (5 - len(args))
        return self.lib.prctl(*a)

    def unshare(self, flags):
        return self.lib.unshare(self.c.c_int(flags)) == 0

    def keep_cap(self, cap):
        """Keep ``cap`` alone (effective, permitted, inheritable, and ambient so a Python
        the sample starts can read its install too)."""
        c = self.c
        class Hdr(c.Structure):
            _fields_ = [("version", c.c_uint32), ("pid", c.c_int)]
        class Data(c.Structure):
            _fields_ = [("eff", c.c_uint32), ("perm", c.c_uint32), ("inh", c.c_uint32)]
        data = (Data * 2)()
        data[0].eff = data[0].perm = data[0].inh = 1 << cap
        if self.lib.capset(c.byref(Hdr(0x20080522, 0)), data) != 0:
            return False
        self.prctl(47, 2, cap)  # PR_CAP_AMBIENT_RAISE
        return True

    def landlock(self, tmp, reads):
        """Confine writes to ``tmp`` (+ /dev/null), reads to ``reads`` + ``tmp``, deny TCP,
        scope signals. Returns what was applied."""
        c, sc = self.c, self.lib.syscall
        abi = sc(c.c_long(444), None, c.c_size_t(0), c.c_uint32(1))
        if abi < 1:
            return {}
        write = FS_WRITE | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
        fs = write | FS_READ
        net = 3 if abi >= 4 else 0
        scoped = 3 if abi >= 6 else 0
        attr = (c.c_uint64 * 3)(fs, net, scoped)
        size = 8 if abi < 4 else 16 if abi < 6 else 24
        rs = sc(c.c_long(444), c.byref(attr), c.c_size_t(size), c.c_uint32(0))
        if rs < 0:
            return {}
        class Beneath(c.Structure):
            _pack_ = 1
            _fields_ = [("allowed", c.c_uint64), ("fd", c.c_int32)]
        def allow(path, rights):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                if not os.path.isdir(path):
                    rights &= FS_FILE
                sc(c.c_long(445), c.c_int(rs), c.c_int(1), c.byref(Beneath(rights, fd)),
                   c.c_uint32(0))
            finally:
                os.close(fd)
        allow(tmp, fs)
        allow("/dev/null", fs & FS_FILE)
        for p in reads:
            allow(p, FS_READ)
        ok = sc(c.c_long(446), c.c_int(rs), c.c_uint32(0)) == 0
        os.close(rs)
        return {"landlock": abi, "ll_net": bool(net), "ll_scope": bool(scoped)} if ok else {}


def read_paths(extra):
    """What the sample may read: the interpreter, its libraries, site-packages, system dirs.
    Missing paths are skipped when the rules are added; symlinks resolve there too."""
    paths = set(SYSTEM_DIRS)
    paths.update(p for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                             sys.base_exec_prefix, os.path.dirname(sys.executable)) if p)
    paths.update(p for p in sys.path if p)
    paths.update(extra)
    try:  # wherever libpython, libc & co. live (nix, conda, ...)
        with open("/proc/self/maps") as f:
            for line in f:
                i = line.find("/")
                if i > 0 and ".so" in line:
                    paths.add(os.path.dirname(line[i:].rstrip("\n")))
    except OSError:
        pass
    return sorted(paths)


def count_tasks(uid):
    """Tasks of ``uid`` now: RLIMIT_NPROC is per user, so a shared uid needs headroom."""
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    n += len(os.listdir("/proc/%s/task" % name))
            except OSError:
                pass
    return n


def kill_descendants():
    """Without a pid namespace: we are a child subreaper, so orphans (even ones that left
    the process group with setsid) are re-parented to us. Kill every descendant found in
    one snapshot of /proc, reap, repeat until none is left (a fork bomb refills slowly:
    its dead stay counted against RLIMIT_NPROC until reaped)."""
    me = os.getpid()
    for _ in range(200):
        kids = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name, "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                    kids.setdefault(int(fields[1]), []).append((int(name), fields[0]))
                except (OSError, ValueError, IndexError):
                    pass
        todo, live = [me], []
        while todo:
            for pid, state in kids.get(todo.pop(), ()):
                todo.append(pid)
                if state != b"Z":
                    live.append(pid)
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not live:
                return
        time.sleep(0.002)


def set_limit(res, soft, hard=None):
    try:
        resource.setrlimit(res, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass


def harden(spec, ab, applied):
    """In the process that will run the sample (and pass it on to its children)."""
    lim = spec["limits"]
    cap = file_cap() if ab is not None and spec["drop"] == "dac" else None
    if cap is not None:
        ab.prctl(8, 1)  # PR_SET_KEEPCAPS
        become(*spec["nobody"])
        kept = ab.keep_cap(cap)
        applied["user"] = ("nobody+read" if cap == 2 else "nobody+override") if kept \
            else "nobody"
    elif spec["drop"] == "dac":
        applied["user"] = "root"  # nobody could not even import the standard library
    if ab is not None:
        ab.prctl(4, 1)  # PR_SET_DUMPABLE again (a uid change clears it; /proc/self needs it)
        ab.prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
        applied.update(ab.landlock(spec["tmp"], read_paths(spec["reads"])))
        applied["ll_read"] = "landlock" in applied
    mb = 1 << 20
    set_limit(resource.RLIMIT_AS, lim["memory_mb"] * mb)
    set_limit(resource.RLIMIT_FSIZE, lim["file_size_mb"] * mb)
    set_limit(resource.RLIMIT_NOFILE, lim["open_files"])
    set_limit(resource.RLIMIT_CORE, 0)
    cpu = int(lim["timeout_s"]) + 1
    set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    if LINUX:
        if "user" in applied.get("ns", ""):
            nproc = lim["processes"] + 2  # counted per user namespace: only this job
        else:
            nproc = count_tasks(os.getuid()) + lim["processes"] + 2
        set_limit(resource.RLIMIT_NPROC, nproc)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes fail with EFBIG instead
    signal.signal(signal.SIGXCPU, on_timer)
    signal.signal(signal.SIGALRM, on_timer)
    if ab is not None:
        ab.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: dies with the outer runner


# -- judging ---------------------------------------------------------------------------------
def fresh_main():
    import builtins
    mod = type(sys)("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    sys.argv = ["sample.py"]
    return mod.__dict__


def last_line(exc):
    """``Name: message`` as a traceback's last line (``traceback`` costs 8 ms to import)."""
    try:
        msg = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    except BaseException:
        msg = "<unprintable>"
    out = type(exc).__name__ + (": " + msg if msg else "")
    if isinstance(exc, SyntaxError) and exc.lineno:
        out += " (line %d)" % exc.lineno
    return out


def print_traceback(exc, src):
    """The traceback from the sample's first frame on (runner frames are noise), with the
    sample's own source lines."""
    lines = src.splitlines()
    frames = []
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<sample>":
        tb = tb.tb_next
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    if len(frames) > 40:  # deep recursion: a million frames would take seconds to print
        frames[20:-20] = [(None, len(frames) - 40)]
    out = ["Traceback (most recent call last):"]
    for co, n in frames:
        if co is None:
            out.append("  [... %d more frames ...]" % n)
            continue
        out.append('  File "%s", line %s, in %s' % (co.co_filename, n, co.co_name))
        if co.co_filename == "<sample>" and n and 0 < n <= len(lines):
            out.append("    " + lines[n - 1].strip())
    if isinstance(exc, SyntaxError):
        out = ['  File "<sample>", line %s' % exc.lineno, "    " + (exc.text or "").strip()]
    out.append(last_line(exc))
    try:
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()
    except BaseException:
        pass


def classify(exc, src):
    """(status, error class, detail) for an exception out of the sample; prints the
    traceback to stderr for the user."""
    if isinstance(exc, Timeout):
        return "timeout", "Timeout", "timed out"
    if isinstance(exc, SystemExit):
        return "exited", "SystemExit", "exit(%s) before the end" % short(exc.code, 60)
    print_traceback(exc, src)
    last = last_line(exc)
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError", short(last)
    status = "failed" if isinstance(exc, AssertionError) else "error"
    return status, type(exc).__name__, short(last, 300)


def compile_sample(src):
    try:
        return compile(src, "<sample>", "exec"), None
    except (SyntaxError, ValueError, OverflowError, MemoryError) as exc:
        return None, classify(exc, src)


def flush_std():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass


def run_script(spec, report):
    src = spec["code"]
    code, bad = compile_sample(src)
    if bad:
        return dict(zip(("status", "error", "detail"), bad), tests_total=1)
    try:
        exec(code, fresh_main())
        sys.stdout.flush()
    except BaseException as exc:
        status, error, detail = classify(exc, src)
        flush_std()
        return dict(status=status, error=error, detail=detail, tests_total=1)
    flush_std()
    return dict(status="passed", tests_passed=1, tests_total=1)


def lines_of(text):
    out = [line.rstrip() for line in text.split("\n")]
    while out and not out[-1]:
        out.pop()
    return out


def close_num(x, y):
    return x == y or abs(x - y) <= 1e-6 or abs(x - y) <= 1e-6 * max(abs(x), abs(y))


def same_text(got, exp):
    """Lines with trailing spaces and blank lines ignored; else tokens, numbers within 1e-6."""
    if lines_of(got) == lines_of(exp):
        return True
    a, b = got.split(), exp.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y:
            try:
                if not close_num(float(x), float(y)):
                    return False
            except ValueError:
                return False
    return True


def anon_file(folder, data=b""):
    """An unnamed file in the job's dir (``tempfile`` costs 5 ms to import)."""
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):
        name = os.path.join(folder, ".io-%d-%d" % (os.getpid(), time.monotonic_ns()))
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.unlink(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, 0)
    return fd


def wait_child(pid, timeout):
    """Wait for ``pid`` at most ``timeout`` s (then SIGKILL). Returns (status, killed)."""
    killed = False
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    if pfd is not None:
        if not select.select([pfd], [], [], max(timeout, 0))[0]:
            os.kill(pid, signal.SIGKILL)
            killed = True
        os.close(pfd)
    else:
        end = time.monotonic() + timeout
        while True:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                return st, False
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    return os.waitpid(pid, 0)[1], killed


def signal_verdict(st, killed):
    sig = os.WTERMSIG(st)
    if killed or sig == signal.SIGXCPU:
        return "timeout", "Timeout", "timed out"
    if sig == signal.SIGKILL:
        return "memory", "Killed", "killed (out of memory?)"
    names = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV", 15: "SIGTERM"}
    return "error", "Signal", "killed by signal %s" % names.get(sig, sig)


def stdio_child(code, src, fin, fout, wp, lim):
    """In the forked test process: stdin/stdout are the test's files. Reports before the
    interpreter's normal exit (which flushes whatever files the sample left open)."""
    try:
        res = stdio_test(code, src, fin, fout, lim)
        os.write(wp, marshal.dumps(res))
    except BaseException:
        os._exit(70)  # never a silent 0: that would be judged on its output
    raise ExitChild()


def stdio_test(code, src, fin, fout, lim):
    import io
    os.dup2(fin, 0)
    os.dup2(fout, 1)
    os.close(fin)
    os.close(fout)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.open(0, "rb", closefd=False),
                                                 encoding="utf-8", errors="replace")
    out = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding="utf-8",
                           errors="replace")
    sys.stdout = sys.__stdout__ = out
    t = lim["test_timeout_s"]
    cpu = int(t) + 1
    set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    signal.setitimer(signal.ITIMER_REAL, t)
    try:
        exec(code, fresh_main())
        out.flush()
    except SystemExit as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if exc.code not in (None, 0):
            return dict(status="error", error="SystemExit", detail="exit(%s)" % short(exc.code, 60))
        try:
            out.flush()
        except BaseException as e2:
            return dict(zip(("status", "error", "detail"), classify(e2, src)))
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return dict(zip(("status", "error", "detail"), classify(exc, src)))
    signal.setitimer(signal.ITIMER_REAL, 0)
    flush_std()
    return {"status": "ok"}


def fork_patiently(patience):
    """fork(), waiting out EAGAIN: where jobs share a uid, a fork bomb in another job can
    use up RLIMIT_NPROC until its own timeout kills it."""
    end = time.monotonic() + patience
    while True:
        try:
            return os.fork()
        except BlockingIOError:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)


def run_stdio(spec, report):
    src, lim, tests = spec["code"], spec["limits"], spec["tests"]
    code, bad = compile_sample(src)
    if bad:
        return dict(zip(("status", "error", "detail"), bad))
    got = ""
    for i, t in enumerate(tests):
        fin = anon_file(spec["tmp"], str(t.get("input", "")).encode("utf-8", "replace"))
        fout = anon_file(spec["tmp"])
        rp, wp = os.pipe()
        sys.stdout.flush()
        pid = fork_patiently(lim["test_timeout_s"])
        if pid == 0:
            os.close(rp)
            os.close(report)
            stdio_child(code, src, fin, fout, wp, lim)
        os.close(wp)
        st, killed = wait_child(pid, lim["test_timeout_s"] + 0.5)
        res = marshal.loads(read_all(rp) or marshal.dumps({}))
        os.close(rp)
        os.close(fin)
        os.lseek(fout, 0, 0)
        got = read_all(fout).decode("utf-8", "replace")
        os.close(fout)
        where = "test %d: " % i
        if os.WIFSIGNALED(st) or killed:
            status, error, detail = signal_verdict(st, killed)
            return dict(status=status, error=error, detail=where + detail, stdout=got)
        if res.get("status", "ok") != "ok":
            res["detail"] = where + res.get("detail", "")
            res["stdout"] = got
            return res
        if not res and os.WEXITSTATUS(st) == 70:
            return dict(status="error", error="SandboxError", stdout=got,
                        detail=where + "the test process failed")
        if not res and os.WEXITSTATUS(st) != 0:
            return dict(status="error", error="ExitCode", stdout=got,
                        detail=where + "exit code %d" % os.WEXITSTATUS(st))
        exp = str(t.get("output", ""))
        if not same_text(got, exp):
            return dict(status="failed", error="WrongAnswer", stdout=got, detail=where
                        + "expected %s got %s" % (short(exp.strip()), short(got.strip())))
        os.write(report, b"+")
    return dict(status="passed", stdout=got)


def json_key(k):
    if isinstance(k, str):
        return k
    if isinstance(k, bool) or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    if isinstance(k, (int, float)):
        return repr(k)
    raise TypeError


def plain(o):
    """What a JSON round trip makes of ``o`` (tuples become lists, keys strings, numpy via
    ``tolist``); TypeError when it has no JSON form."""
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    if isinstance(o, (list, tuple)):
        return [plain(x) for x in o]
    if isinstance(o, dict):
        return {json_key(k): plain(v) for k, v in o.items()}
    if hasattr(o, "tolist"):
        return plain(o.tolist())
    raise TypeError


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return close_num(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def names_in(code):
    """Every global/attribute name the code (and its nested functions/classes) mentions."""
    out, todo = set(), [code]
    while todo:
        co = todo.pop()
        out.update(co.co_names)
        todo.extend(c for c in co.co_consts if hasattr(c, "co_names"))
    return out


def prelude(code, g):
    """LeetCode's environment pre-imports these; import only what the code names (the full
    set costs about 10 ms)."""
    for name in names_in(code) & PRELUDE.keys():
        mod = __import__(PRELUDE[name] or name)
        g[name] = getattr(mod, name) if PRELUDE[name] else mod


def run_call(spec, report):
    src, lim, name = spec["code"], spec["limits"], spec["func_name"]
    code, bad = compile_sample(src)
    if bad:
        return dict(zip(("status", "error", "detail"), bad))
    g = fresh_main()
    prelude(code, g)
    signal.setitimer(signal.ITIMER_REAL, lim["test_timeout_s"])
    try:
        exec(code, g)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return dict(zip(("status", "error", "detail"), classify(exc, src)))
    cls = g.get("Solution")
    method = isinstance(cls, type) and hasattr(cls, name)
    if not method and not callable(g.get(name)):
        return dict(status="error", error="NameError",
                    detail="no Solution.%s and no function %s" % (name, name))
    for i, t in enumerate(spec["tests"]):
        where = "test %d: " % i
        if "bad" in t:
            return dict(status="error", error="BadTest", detail=where + t["bad"])
        signal.setitimer(signal.ITIMER_REAL, lim["test_timeout_s"])
        try:
            got = (getattr(cls(), name) if method else g[name])(*t["args"])
            signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            status, error, detail = classify(exc, src)
            return dict(status=status, error=error, detail=where + detail)
        exp = t["expected"]
        try:
            norm = plain(got)
        except (TypeError, RecursionError):
            norm = got
        try:
            ok = norm == exp or same_value(norm, exp)
        except BaseException:
            ok = False
        if not ok:
            try:
                shown = short(repr(got))
            except BaseException:
                shown = "<unprintable>"
            return dict(status="failed", error="WrongAnswer",
                        detail=where + "expected %s got %s" % (short(t["shown"]), shown))
        os.write(report, b"+")
    flush_std()
    return dict(status="passed")


# -- the two processes ---------------------------------------------------------------------
def inner(spec, ab, applied, report):
    """Becomes the sample: confine, judge, report once, exit without cleanup."""
    try:
        harden(spec, ab, applied)
        run = {"script": run_script, "stdio": run_stdio, "call": run_call}[spec["kind"]]
        res = run(spec, report)
    except ExitChild:
        raise
    except BaseException as exc:
        res = dict(status="error", error="SandboxError", detail=short(repr(exc), 300))
    res["applied"] = applied
    try:
        os.write(report, b"=" + marshal.dumps(res))
    except BaseException:
        pass
    os._exit(0)


def outer():
    spec = marshal.loads(read_all(0))
    nul = os.open(os.devnull, os.O_RDWR)
    os.dup2(nul, 0)
    os.close(nul)
    sys.dont_write_bytecode = True
    sys.path.extend(p for p in spec["path"] if p not in sys.path)
    import builtins
    builtins.exit, builtins.quit = Quitter("exit"), Quitter("quit")
    rfd, applied = spec["fd"], {"user": "self", "ns": ""}
    ab = Sys() if LINUX else None
    if spec["drop"] == "full":
        become(*spec["nobody"])
        applied["user"] = "nobody"
    if ab is not None:
        if spec["drop"] == "dac" and ab.unshare(NEWNS_NET | NEWNS_PID):
            applied["ns"] = "net,pid"
        elif spec["drop"] != "dac" and ab.unshare(NEWNS_USER | NEWNS_NET | NEWNS_PID):
            applied["ns"] = "user,net,pid"
        ab.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent's thread
        if os.getppid() != spec["ppid"]:
            os._exit(3)
        if "pid" not in applied["ns"]:
            applied["reaper"] = ab.prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
    deadline = time.monotonic() + spec["limits"]["timeout_s"]
    rp, wp = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rp)
        os.close(rfd)
        try:
            inner(spec, ab, applied, wp)
        except ExitChild:
            return
        os._exit(0)
    os.close(wp)
    buf, killed, st = bytearray(), False, None
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    watch = [rp] + ([pfd] if pfd is not None else [])
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready = select.select(watch, [], [], left if pfd is not None else min(left, 0.005))[0]
        if rp in ready:
            data = os.read(rp, 1 << 16)
            if data:
                buf += data
            else:
                watch.remove(rp)
        if pfd is None or pfd in ready:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            st = None
    if st is None:
        st = os.waitpid(pid, 0)[1]
    if applied.get("reaper"):
        kill_descendants()
    os.set_blocking(rp, False)
    try:
        while True:
            data = os.read(rp, 1 << 16)
            if not data:
                break
            buf += data
    except BlockingIOError:
        pass
    cut = buf.find(b"=")
    done = buf[:cut].count(b"+") if cut >= 0 else buf.count(b"+")
    res = None
    if cut >= 0 and not killed:
        try:
            res = marshal.loads(bytes(buf[cut + 1:]))
        except (EOFError, ValueError, TypeError):
            res = None
    if res is None:
        if killed:
            res = dict(status="timeout", error="Timeout",
                       detail="timed out after %gs" % spec["limits"]["timeout_s"])
        elif os.WIFSIGNALED(st):
            res = dict(zip(("status", "error", "detail"), signal_verdict(st, False)))
        else:
            res = dict(status="exited", error="Exited",
                       detail="the sample left before it finished")
        res["applied"] = applied
    res.setdefault("tests_passed", done)
    os.write(rfd, marshal.dumps(res))
    os._exit(0)


outer()
'''


# -- the parent ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Host:
    site: tuple[str, ...]  # put on the runner's sys.path
    reads: tuple[str, ...]  # also readable: the venv (a Python the sample starts reads it)
    drop: str  # "" | "full" (root -> nobody) | "dac" (root -> nobody, keeps read access)
    nobody: tuple[int, int]
    wrap: tuple[str, ...]  # macOS: the sandbox-exec command, else empty


_host_cache: _Host | None = None
_prot_cache: dict[str, str] | None = None
_lock = threading.Lock()


def _site_dirs() -> tuple[str, ...]:
    """The parent's site-packages plus the plain directory lines of their ``.pth`` files."""
    import site

    dirs: list[str] = []
    for d in site.getsitepackages():
        if not os.path.isdir(d):
            continue
        dirs.append(d)
        for name in sorted(os.listdir(d)):
            if not name.endswith(".pth"):
                continue
            try:
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    for line in f:
                        line = line.strip()
                        if line and not line.startswith(("#", "import ", "import\t")):
                            p = os.path.join(d, line)
                            if os.path.isdir(p):
                                dirs.append(os.path.normpath(p))
            except (OSError, UnicodeDecodeError):
                continue
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


def _host() -> _Host:
    global _host_cache
    with _lock:
        if _host_cache is None:
            site = _site_dirs()
            drop, ids = "", (65534, 65534)
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                import pwd

                try:
                    pw = pwd.getpwnam("nobody")
                    ids = (pw.pw_uid, pw.pw_gid)
                except KeyError:
                    pass
                need = {sys.base_prefix, sys.prefix,
                        os.path.dirname(os.path.realpath(sys.executable)), *site}
                readable = all(_others_can_read(p) for p in need)
                drop = "full" if readable or not sys.platform.startswith("linux") else "dac"
                if drop == "dac" and not _has_cap(1):
                    drop = ""  # we could not even enter or clean a dir owned by nobody
            wrap: tuple[str, ...] = ()
            if sys.platform == "darwin" and os.path.exists("/usr/bin/sandbox-exec"):
                wrap = ("/usr/bin/sandbox-exec",)
            reads = tuple(dict.fromkeys((sys.prefix, sys.exec_prefix,
                                         os.path.dirname(sys.executable))))
            _host_cache = _Host(site, reads, drop, ids, wrap)
        return _host_cache


def _env(tmp: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# The runner's stdin: a 10-digit length, the runner's code object, then the job. Compiling
# the runner in every job would cost more than starting the interpreter does.
_BOOT = "import marshal,os;exec(marshal.loads(os.read(0,int(os.read(0,10)))))"
_code_cache: bytes | None = None


def _runner_code() -> bytes:
    global _code_cache
    if _code_cache is None:
        code = marshal.dumps(compile(_RUNNER, "<sandbox-runner>", "exec"))
        _code_cache = b"%010d" % len(code) + code
    return _code_cache


def _command(host: _Host, tmp: str) -> list[str]:
    cmd = [sys.executable, "-I", "-S", "-c", _BOOT, _MARK + "runner"]
    if host.wrap:  # macOS: the only confinement there is
        real = os.path.realpath(tmp).replace('"', "")
        profile = ("(version 1)(allow default)(deny network*)(deny file-write* (subpath \"/\"))"
                   f"(allow file-write* (subpath \"{real}\") (literal \"/dev/null\"))")
        cmd = [*host.wrap, "-p", profile, *cmd]
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


class _Stop:
    """Set by the caller's ``cancel`` or by us (the caller stopped iterating); setting only
    our own event leaves the caller's untouched."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.own = threading.Event()
        self.cancel = cancel

    def is_set(self) -> bool:
        return self.own.is_set() or (self.cancel is not None and self.cancel.is_set())


def _wait(proc: subprocess.Popen[bytes], deadline: float,
          cancel: threading.Event | _Stop | None) -> str:
    """Wait until the runner exits ("done"), the deadline passes ("timeout") or ``cancel``
    is set ("cancelled"). The runner is left a zombie, so its group id cannot be reused by
    an unrelated process before we kill the group."""
    try:
        pfd = os.pidfd_open(proc.pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pfd = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if cancel is not None and cancel.is_set():
                return "cancelled"
            step = min(left, 0.1) if cancel is not None else left
            if pfd is not None:
                poller = select.poll()  # not select(): it fails on fds above 1023
                poller.register(pfd, select.POLLIN)
                if poller.poll(step * 1000):
                    return "done"
            elif hasattr(os, "waitid"):  # no pidfd: poll, still without reaping
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
                    return "done"
                time.sleep(min(step, 0.005))
            else:
                try:
                    proc.wait(timeout=min(step, 0.1))
                    return "done"
                except subprocess.TimeoutExpired:
                    pass
    finally:
        if pfd is not None:
            os.close(pfd)


def _check(job: Job) -> None:
    if job.kind not in KINDS:
        raise ValueError(f"unknown job kind {job.kind!r}; expected one of {', '.join(KINDS)}")


def _execute(job: Job, limits: Limits, cancel: threading.Event | _Stop | None
             ) -> tuple[dict[str, Any], str, str, float] | None:
    """Launch the runner, wait, clean up. Returns the runner's result dict (or one made up
    from how it ended), stdout, stderr and the runtime; None when cancelled."""
    host = _host()
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=_MARK)
    r, w = os.pipe()
    try:
        if host.drop:
            os.chown(tmp, *host.nobody)
        tests = _call_tests(job.tests) if job.kind == "call" else [dict(t) for t in job.tests]
        spec = {"kind": job.kind, "code": job.code, "tests": tests,
                "func_name": job.func_name, "tmp": tmp, "fd": w, "ppid": os.getpid(),
                "path": list(host.site), "reads": list(host.reads), "drop": host.drop,
                "nobody": list(host.nobody),
                "limits": {k: getattr(limits, k) for k in Limits.__dataclass_fields__}}
        with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
                tempfile.TemporaryFile() as ferr:
            fin.write(_runner_code())
            fin.write(marshal.dumps(spec))
            fin.seek(0)
            try:
                proc = subprocess.Popen(_command(host, tmp), stdin=fin, stdout=fout,
                                        stderr=ferr, cwd=tmp, env=_env(tmp),
                                        start_new_session=True, pass_fds=(w,))
            finally:
                os.close(w)
                w = -1
            how = _wait(proc, t0 + limits.timeout_s + _GRACE_S, cancel)
            _kill_group(proc.pid)  # stragglers too (the runner is still a zombie here)
            proc.wait()
            runtime = time.monotonic() - t0
            if how == "cancelled":
                return None
            res = _read_result(r)
            if how == "timeout":
                res = {"status": "timeout", "error": "Timeout",
                       "detail": f"killed after {limits.timeout_s:g}s"}
            elif not res:
                rc = proc.returncode
                if rc is not None and rc < 0 and -rc == signal.SIGKILL:
                    res = {"status": "memory", "error": "Killed",
                           "detail": "the sandbox was killed (out of memory?)"}
                else:
                    res = {"status": "error", "error": "SandboxError",
                           "detail": f"the sandbox runner failed (exit code {rc})"}
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


def _run(job: Job, limits: Limits, cancel: threading.Event | _Stop | None
         ) -> Outcome | None:
    _check(job)
    total = 1 if job.kind == "script" else len(job.tests)
    if not total:
        return Outcome(False, "error", "NoTests", "the problem has no tests", 0.0, "", "", 0, 0)
    got = _execute(job, limits, cancel)
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
    out = _run(job, limits, None)
    assert out is not None
    return out


def _workers(workers: int | None) -> int:
    if workers:
        return max(1, workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(jobs: Sequence[Job], limits: Limits = Limits(), workers: int | None = None,
             cancel: threading.Event | None = None) -> Iterator[tuple[int, Outcome]]:
    """Run jobs in parallel (default: one per CPU), yielding ``(index, outcome)`` as each
    finishes. Threads only wait on their runner, so they cost nothing. Once ``cancel`` is
    set, or the caller stops iterating, nothing new starts and running jobs are killed
    (and not yielded)."""
    for job in jobs:
        _check(job)
    stop = _Stop(cancel)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(jobs)):
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Outcome | None] | BaseException | None] = \
        queue.SimpleQueue()

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    break
                done.put((i, _run(jobs[i], limits, stop)))
        except BaseException as exc:  # surfaced in the caller's thread
            done.put(exc)
        finally:
            done.put(None)

    n = min(_workers(workers), len(jobs))
    threads = [threading.Thread(target=work, name=f"sandbox-{k}", daemon=True)
               for k in range(n)]
    for t in threads:
        t.start()
    live = n
    try:
        while live:
            item = done.get()
            if item is None:
                live -= 1
            elif isinstance(item, BaseException):
                stop.own.set()
                raise item
            elif item[1] is not None:
                yield item[0], item[1]
    finally:
        if live:
            stop.own.set()
        for t in threads:
            t.join()


def protections() -> dict[str, str]:
    """What this machine actually gives the sandbox, from one probe job (run once, cached)."""
    global _prot_cache
    if _prot_cache is not None:
        return dict(_prot_cache)
    host = _host()
    got = _execute(Job("script", "pass\n"), Limits(), None)
    out: dict[str, Any] = dict((got[0].get("applied") if got else None) or {})
    user = out.get("user", "self")
    ns = str(out.get("ns", ""))
    linux = sys.platform.startswith("linux")
    rl = "rlimits (cpu, memory, file size, open files, processes)" if linux else \
        "rlimits (cpu, file size, open files; memory and processes are NOT capped here)"
    prot = {"process": f"own session, {rl}, wall timeout kills the group"}
    if out.get("landlock"):
        fs = "landlock: writes only inside the sample's temp dir"
        if out.get("ll_read"):
            fs += "; reads only the Python install and system dirs"
        prot["filesystem"] = fs
    elif host.wrap:
        prot["filesystem"] = "sandbox-exec: writes only inside the sample's temp dir"
    else:
        prot["filesystem"] = ("NOT confined: the sample can write wherever "
                              + ("nobody" if user != "self" else "you") + " can")
    if "net" in ns:
        prot["network"] = "none: own network namespace"
    elif out.get("ll_net"):
        prot["network"] = "landlock: TCP connect/bind denied (UDP not covered)"
    elif host.wrap:
        prot["network"] = "sandbox-exec: denied"
    else:
        prot["network"] = "NOT blocked: the sample can reach the network"
    if "pid" in ns:
        prot["processes"] = "own pid namespace: everything dies with the sample"
    elif out.get("reaper"):
        prot["processes"] = ("no pid namespace: the runner kills every process the sample "
                             "started when it ends")
    else:
        prot["processes"] = ("process group only: NOT contained if the sample starts a new "
                             "session")
    if out.get("ll_scope"):
        prot["processes"] += "; cannot signal outside processes"
    if user == "nobody+read":
        prot["user"] = ("runs as nobody (dropped from root), keeping read access to files "
                        "(the Python install is not readable by nobody)")
    elif user == "nobody+override":
        prot["user"] = ("runs as nobody (dropped from root), keeping root's file access "
                        "(CAP_DAC_OVERRIDE: the Python install is not readable by nobody)")
    elif user == "nobody":
        prot["user"] = "runs as nobody (dropped from root)"
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        prot["user"] = ("NOT dropped: runs as root (nobody cannot read the Python install "
                        "and no capability to keep was available)")
    else:
        prot["user"] = "runs as the current user" + (" in its own user namespace"
                                                      if "user" in ns else "")
    _prot_cache = prot
    return dict(prot)
