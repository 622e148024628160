"""Child side: the ``stdio`` kind. The program runs once per test in a forked process
whose stdin and stdout are the test's files; its output is compared as judges do.

Runs inside the sandboxed child: standard library only, never imports ``ssd_local``.
"""

import marshal
import os
import resource
import select
import sys
import time

import _signal as signal  # the plain module imports enum: 3 ms a job

from .answers import same_text
from .confine import set_limit
from .judge import (ExitChild, classify, compile_sample, flush_std, fresh_main, read_all,
                    short, signal_verdict, verdict)


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


def stdio_child(code, src, fin, fout, wp, lim):
    """In the forked test process: stdin/stdout are the test's files. Reports before the
    interpreter's normal exit (which flushes whatever files the sample left open)."""
    try:
        res = stdio_test(code, src, fin, fout, lim)
        os.write(wp, marshal.dumps(res))
    except BaseException:
        os._exit(70)  # never a silent 0: that would be judged on its output
    raise ExitChild()


def test_files(fin, fout):
    """The test's files as fds 0 and 1, and as ``sys.stdin``/``sys.stdout``."""
    import io
    os.dup2(fin, 0)
    os.dup2(fout, 1)
    os.close(fin)
    os.close(fout)
    stdin = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding="utf-8",
                             errors="replace")
    out = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding="utf-8",
                           errors="replace")
    sys.stdin = sys.__stdin__ = stdin  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = out  # type: ignore[misc]
    return out


def stdio_test(code, src, fin, fout, lim):
    out = test_files(fin, fout)
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
            return verdict("error", "SystemExit", "exit(%s)" % short(exc.code, 60))
        try:
            out.flush()
        except BaseException as e2:
            return verdict(*classify(e2, src))
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return verdict(*classify(exc, src))
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


def stdio_once(spec, code, t, report):
    """Run one test in a forked process; returns (wait status, killed by us, its result,
    its output)."""
    lim = spec["limits"]
    fin = anon_file(spec["tmp"], str(t.get("input", "")).encode("utf-8", "replace"))
    fout = anon_file(spec["tmp"])
    rp, wp = os.pipe()
    sys.stdout.flush()
    pid = fork_patiently(lim["test_timeout_s"])
    if pid == 0:
        os.close(rp)
        os.close(report)
        stdio_child(code, spec["code"], fin, fout, wp, lim)
    os.close(wp)
    st, killed = wait_child(pid, lim["test_timeout_s"] + 0.5)
    res = marshal.loads(read_all(rp) or marshal.dumps({}))
    os.close(rp)
    os.close(fin)
    os.lseek(fout, 0, 0)
    got = read_all(fout).decode("utf-8", "replace")
    os.close(fout)
    return st, killed, res, got


def stdio_verdict(st, killed, res, got, t, where):
    """None when the test passed, else the result dict."""
    if os.WIFSIGNALED(st) or killed:
        status, error, detail = signal_verdict(st, killed)
        return verdict(status, error, where + detail, stdout=got)
    if res.get("status", "ok") != "ok":
        res["detail"] = where + res.get("detail", "")
        res["stdout"] = got
        return res
    if not res and os.WEXITSTATUS(st) == 70:
        return verdict("error", "SandboxError", where + "the test process failed", stdout=got)
    if not res and os.WEXITSTATUS(st) != 0:
        return verdict("error", "ExitCode", where + "exit code %d" % os.WEXITSTATUS(st),
                       stdout=got)
    exp = str(t.get("output", ""))
    if not same_text(got, exp):
        return verdict("failed", "WrongAnswer", where + "expected %s got %s"
                       % (short(exp.strip()), short(got.strip())), stdout=got)
    return None


def run_stdio(spec, report):
    code, bad = compile_sample(spec["code"])
    if bad:
        return verdict(*bad)
    got = ""
    for i, t in enumerate(spec["tests"]):
        st, killed, res, got = stdio_once(spec, code, t, report)
        failed = stdio_verdict(st, killed, res, got, t, "test %d: " % i)
        if failed is not None:
            return failed
        os.write(report, b"+")
    return dict(status="passed", stdout=got)
