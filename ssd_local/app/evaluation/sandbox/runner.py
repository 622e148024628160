"""Child side: the two processes of one job, and the report protocol.

The host starts ``python -I -S -c BOOT`` (see ``host.py``); the loader (``boot.py``) turns
the code objects on stdin into modules of the package ``_ssd_sandbox`` (``confine``,
``judge``, ``runner`` and what the job's kind needs: ``answers`` and ``stdio`` or ``call``)
and calls :func:`main`, which reads the job's spec (a marshalled dict) from the rest of
stdin.

* The **outer** runner drops to ``nobody`` where it can, takes network and pid namespaces,
  and forks the **inner** one (pid 1 of the new pid namespace). It enforces the wall
  deadline, then sends exactly one marshalled result dict on the host's private pipe
  (``spec["fd"]``) and exits.
* The **inner** runner confines itself (uid, Landlock, rlimits) and becomes the sample. On
  its own pipe to the outer runner it writes ``+`` for every test passed and, once,
  ``=`` followed by the marshalled result. A sample that leaves early (``sys.exit``,
  ``os._exit``) never writes ``=``, so it never passes.

Standard library only, never imports ``ssd_local``.
"""

import marshal
import os
import select
import sys
import time

import _signal as signal  # the plain module imports enum: 3 ms a job

from . import confine, judge


class Quitter:
    """``exit``/``quit`` as ``site`` would define them (it is skipped by ``-S``)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Use %s() to exit" % self.name

    def __call__(self, code=None):
        raise SystemExit(code)


KIND_MODULES = {"script": "judge", "stdio": "stdio", "call": "call"}  # each has run_<kind>


def judge_for(kind):
    """``run_<kind>`` of the kind's module (the host sent it; it is in ``sys.modules``)."""
    mod = __import__(__name__.rpartition(".")[0] + "." + KIND_MODULES[kind], None, None,
                     ["run_" + kind])
    return getattr(mod, "run_" + kind)


def inner(spec, ab, applied, report):
    """Becomes the sample: confine, judge, report once, exit without cleanup."""
    try:
        confine.harden(spec, ab, applied)
        judge.arm()
        res = judge_for(spec["kind"])(spec, report)
    except judge.ExitChild:
        raise
    except BaseException as exc:
        res = dict(status="error", error="SandboxError", detail=judge.short(repr(exc), 300))
    res["applied"] = applied
    try:
        os.write(report, b"=" + marshal.dumps(res))
    except BaseException:
        pass
    os._exit(0)


def read_spec():
    """The job from stdin, then stdin is /dev/null; ``sys.path`` gets the host's
    site-packages and builtins get ``exit``/``quit`` (``-S`` skipped ``site``)."""
    spec = marshal.loads(judge.read_all(0))
    nul = os.open(os.devnull, os.O_RDWR)
    os.dup2(nul, 0)
    os.close(nul)
    sys.dont_write_bytecode = True
    sys.path.extend(p for p in spec["path"] if p not in sys.path)
    import builtins
    builtins.exit, builtins.quit = Quitter("exit"), Quitter("quit")  # type: ignore[assignment]
    return spec


def watch(pid, rp, deadline):
    """Collect the inner runner's report until it exits or the deadline passes (then kill
    it). Returns (report bytes, killed, wait status or None)."""
    buf, killed, st = bytearray(), False, None
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    watched = [rp] + ([pfd] if pfd is not None else [])
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready = select.select(watched, [], [],
                              left if pfd is not None else min(left, 0.005))[0]
        if rp in ready:
            data = os.read(rp, 1 << 16)
            if data:
                buf += data
            else:
                watched.remove(rp)
        if pfd is None or pfd in ready:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            st = None
    return buf, killed, st


def drain(rp, buf):
    """What is left on the pipe, without blocking (a descendant may still hold it open)."""
    os.set_blocking(rp, False)
    try:
        while True:
            data = os.read(rp, 1 << 16)
            if not data:
                break
            buf += data
    except BlockingIOError:
        pass
    return buf


def result(spec, buf, killed, st, applied):
    """The one result dict: the inner runner's own, or one made up from how it ended."""
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
            res = judge.verdict(*judge.signal_verdict(st, False))
        else:
            res = dict(status="exited", error="Exited",
                       detail="the sample left before it finished")
        res["applied"] = applied
    res.setdefault("tests_passed", done)
    return res


def main():
    """The outer runner: the entry point the boot loader calls."""
    spec = read_spec()
    rfd, applied = spec["fd"], {"user": "self", "ns": ""}
    ab = confine.Sys() if confine.LINUX else None
    confine.enter_namespaces(spec, ab, applied)
    deadline = time.monotonic() + spec["limits"]["timeout_s"]
    rp, wp = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rp)
        os.close(rfd)
        try:
            inner(spec, ab, applied, wp)
        except judge.ExitChild:
            return  # a finished stdio test process: exit the interpreter normally
        os._exit(0)
    os.close(wp)
    buf, killed, st = watch(pid, rp, deadline)
    if st is None:
        st = os.waitpid(pid, 0)[1]
    if applied.get("reaper"):
        confine.kill_descendants()
    res = result(spec, drain(rp, buf), killed, st, applied)
    os.write(rfd, marshal.dumps(res))
    os._exit(0)
