"""Child side: what judging every kind of job shares (compiling the sample, its fresh
``__main__``, timeouts, tracebacks from the sample's first frame on, verdicts), and the
``script`` kind: a whole program whose asserts are the tests. ``stdio.py`` and ``call.py``
judge the other two kinds; the host sends a job only the modules its kind needs.

A ``run_<kind>(spec, report)`` function returns one result dict (``status``, ``error``,
``detail``, ...) and writes ``+`` on the report pipe for every test passed, so a sample
killed half-way still counts what it passed.

Runs inside the sandboxed child: standard library only, never imports ``ssd_local``,
imports kept minimal (``traceback``, ``tempfile``, ``json`` would cost 5-8 ms a job each).
"""

import os
import sys

import _signal as signal  # the plain module imports enum: 3 ms a job

SAMPLE = "<sample>"  # the sample's filename in its code objects and tracebacks
# Samples are compiled with postponed annotations (``from __future__ import annotations``,
# as Python 3.14 evaluates them lazily): LeetCode's ``def f(self, x: List[int])`` then
# needs no ``typing`` (15 ms a job) and a name only used in annotations is no error.
FUTURE_ANNOTATIONS = 0x1000000  # __future__.annotations.compiler_flag
SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV", 15: "SIGTERM"}


class Timeout(BaseException):
    """BaseException so the sample's ``except Exception`` cannot swallow it."""


class ExitChild(BaseException):
    """Unwinds a finished stdio test child to a normal interpreter exit (flushes files)."""


def on_timer(signum, frame):
    raise Timeout()


def arm():
    """Signals for the sample's process: too-large writes fail with EFBIG instead of
    killing it, the CPU limit and the per-test timer raise Timeout."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGXCPU, on_timer)
    signal.signal(signal.SIGALRM, on_timer)


def read_all(fd):
    chunks: list = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def short(s, n=160):
    s = s if isinstance(s, str) else repr(s)
    return s if len(s) <= n else s[:n] + "..."


def verdict(status, error, detail, **extra):
    return dict(status=status, error=error, detail=detail, **extra)


# -- tracebacks ------------------------------------------------------------------------------
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


def sample_frames(exc):
    """(code, line) from the sample's first frame on (runner frames are noise); a deep
    recursion keeps 20 at each end (a million frames would take seconds to print)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != SAMPLE:
        tb = tb.tb_next
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    if len(frames) > 40:
        frames[20:-20] = [(None, len(frames) - 40)]
    return frames


def print_traceback(exc, src):
    """The traceback with the sample's own source lines, on stderr."""
    lines = src.splitlines()
    out = ["Traceback (most recent call last):"]
    for co, n in sample_frames(exc):
        if co is None:
            out.append("  [... %d more frames ...]" % n)
            continue
        out.append('  File "%s", line %s, in %s' % (co.co_filename, n, co.co_name))
        if co.co_filename == SAMPLE and n and 0 < n <= len(lines):
            out.append("    " + lines[n - 1].strip())
    if isinstance(exc, SyntaxError):
        out = ['  File "%s", line %s' % (SAMPLE, exc.lineno), "    " + (exc.text or "").strip()]
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
        return compile(src, SAMPLE, "exec", FUTURE_ANNOTATIONS, True), None
    except (SyntaxError, ValueError, OverflowError, MemoryError) as exc:
        return None, classify(exc, src)


def flush_std():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass


# -- script ----------------------------------------------------------------------------------
def run_script(spec, report):
    src = spec["code"]
    code, bad = compile_sample(src)
    if bad:
        return verdict(*bad, tests_total=1)
    try:
        exec(code, fresh_main())
        sys.stdout.flush()
    except BaseException as exc:
        status, error, detail = classify(exc, src)
        flush_std()
        return verdict(status, error, detail, tests_total=1)
    flush_std()
    return dict(status="passed", tests_passed=1, tests_total=1)


def signal_verdict(st, killed):
    sig = os.WTERMSIG(st)
    if killed or sig == signal.SIGXCPU:
        return "timeout", "Timeout", "timed out"
    if sig == signal.SIGKILL:
        return "memory", "Killed", "killed (out of memory?)"
    return "error", "Signal", "killed by signal %s" % SIGNALS.get(sig, sig)
