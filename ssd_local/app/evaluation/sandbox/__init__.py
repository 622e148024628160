"""Run model-written Python (buggy, not malicious) without risking the user's machine.

    from ssd_local.app.evaluation import sandbox as sb
    sb.run(sb.Job("call", code, tests, "twoSum"), sb.Limits(timeout_s=5))  # -> sb.Outcome
    for i, outcome in sb.run_many(jobs, limits, workers=4, cancel=event): ...
    sb.protections()  # what this machine gives, in words

**What it does.** One job = one fresh ``python -I -S`` process in its own session, in a new
temporary directory that is deleted afterwards, with a scrubbed environment. Everything
that confines the sample happens in that process *before* the sample's first line:

1. as root: become ``nobody`` (``RLIMIT_NPROC`` is not enforced for root). When ``nobody``
   cannot read the interpreter (one installed in root's home), keep one capability for
   reading files (``CAP_DAC_READ_SEARCH``, else ``CAP_DAC_OVERRIDE``);
2. ``unshare`` (user,) network and pid namespaces, then fork: the sample is pid 1 of its
   own pid namespace, so the kernel kills all it started when it ends, and it has no
   network (only a loopback that is down). Without a pid namespace the runner becomes a
   child subreaper and kills the sample's whole process tree itself;
3. Landlock: writes only beneath the job's temp dir (and ``/dev/null``), reads only from
   the Python install and system dirs, TCP bind/connect denied (ABI >= 4), signals and
   abstract unix sockets scoped to the sample (ABI >= 6);
4. rlimits: CPU, address space, file size, open files, processes, no core files;
5. a wall deadline for the whole job, after which its process group is killed.

A sample that leaves early (``sys.exit``, ``os._exit``) never reports, so it never passes.
A missing kernel feature weakens the protection instead of failing the run, and
:func:`protections` says plainly what this machine gives. On macOS the only confinement is
a ``sandbox-exec`` profile (no network, writes only inside the temp dir).

**What it does NOT protect against.**

- Code written to cheat the score. The sample runs in the judge's interpreter (a fork of
  it for ``stdio`` tests), with the tests' expected answers in memory, and can reach the
  report pipe: it can read the answers, patch the judge or write a passing report itself.
  It guards the machine against careless code, not the score against a sample that games
  it.
- Seeing other processes: there is no mount namespace, so ``/proc`` shows the host's
  processes (command lines included), and ``/etc``, ``/sys``, ``/proc`` stay readable.
- Filling the disk: the number of files (and dirs) it writes inside its temp dir is not
  capped, only the size of each (64 MB) and the number open at once.
- Memory beyond one process: ``RLIMIT_AS`` is per process, so up to ``processes``
  processes may each use ``memory_mb``; there are no cgroups (no CPU share either).
- UDP without a network namespace: Landlock's network rules cover TCP only.
- Reads without Landlock: nothing beyond file permissions; where root dropped to
  ``nobody`` keeping ``CAP_DAC_READ_SEARCH``, that means every file on the machine.
  Without Landlock, jobs sharing the ``nobody`` uid can also reach each other's temp dirs.
- Kernel attack surface: there is no seccomp filter; every syscall is available.
- macOS: ``sandbox-exec`` only (and untested here: the suite needs a Mac); memory
  (``RLIMIT_AS``) and the number of processes are NOT capped there, and there are no
  namespaces or Landlock.

**Layout.** The child side is ``boot.py`` (the loader), ``runner.py`` (the outer and inner
processes and the report protocol), ``confine.py`` (uid, namespaces, Landlock, rlimits,
subreaper), ``judge.py`` (what judging shares, and ``script`` jobs), ``stdio.py``,
``call.py`` and ``answers.py`` (the other two kinds and how answers are compared). They are
stdlib only and never import ``ssd_local``: the host compiles them once per process with
their real filenames and sends the marshalled code a job's kind needs on the child's
stdin, where the loader makes them modules of a package that lives only in
``sys.modules``. ``-S`` skips ``site`` (about 10 ms of a 12 ms job, mostly ``.pth`` import
hooks): the runner puts the parent's site-packages on ``sys.path`` itself (plain ``.pth``
path lines too, not ``import`` lines) and defines ``exit``/``quit``, so ``numpy`` & co.
still import. Hash randomisation stays on (``-I`` ignores ``PYTHONHASHSEED``), as when
running a script. Samples are compiled with postponed annotations (as they always were).
The host side is ``host.py`` (launch, wait, kill, read the result), ``pool.py``
(:func:`run_many`) and ``report.py`` (:func:`protections`).

Call jobs get LeetCode's pre-imported names (``List``, ``deque``, ``heapq``, ...) because its
starter code uses them without importing; stdio jobs get nothing extra.
"""

from .host import KINDS, Job, Limits, Outcome, run
from .pool import run_many
from .report import protections

__all__ = ["KINDS", "Job", "Limits", "Outcome", "protections", "run", "run_many"]
