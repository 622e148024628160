"""Child side: confine the process that will run the sample (Linux syscalls through ctypes,
the uid drop, rlimits, and cleaning up after a sample without a pid namespace).

Runs inside the sandboxed ``python -I -S`` child: standard library only, never imports
``ssd_local``, imports kept minimal (the child's startup is the cost of every job).
"""

import os
import resource
import sys
import time

import _signal as signal  # the plain module imports enum: 3 ms a job

LINUX = sys.platform.startswith("linux")
NEWNS_USER, NEWNS_NET, NEWNS_PID = 0x10000000, 0x40000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_KEEPCAPS = 1, 4, 8
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 36, 38, 47
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # landlock_*
FS_WRITE = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) \
    | (1 << 10) | (1 << 11) | (1 << 12)
FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
FS_FILE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)  # rights that apply to a file
SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc",
               "/proc", "/dev", "/sys", "/nix/store", "/gnu/store")


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


class Sys:
    """The few Linux syscalls the standard library lacks."""

    def __init__(self):
        import ctypes  # here, not above: only Linux needs it (2 ms)
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
        import ctypes as c

        class Hdr(c.Structure):
            _fields_ = [("version", c.c_uint32), ("pid", c.c_int)]

        class Data(c.Structure):
            _fields_ = [("eff", c.c_uint32), ("perm", c.c_uint32), ("inh", c.c_uint32)]

        data = (Data * 2)()
        data[0].eff = data[0].perm = data[0].inh = 1 << cap
        if self.lib.capset(c.byref(Hdr(0x20080522, 0)), data) != 0:
            return False
        self.prctl(PR_CAP_AMBIENT, 2, cap)  # PR_CAP_AMBIENT_RAISE
        return True

    def landlock_abi(self):
        """The kernel's Landlock ABI version; below 1 when it has none."""
        c = self.c
        return self.lib.syscall(c.c_long(SYS_CREATE_RULESET), None, c.c_size_t(0),
                                c.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION

    def landlock(self, tmp, reads):
        """Confine writes to ``tmp`` (+ /dev/null), reads to ``reads`` + ``tmp``, deny TCP,
        scope signals. Returns what was applied."""
        import ctypes as c
        sc = self.lib.syscall
        abi = self.landlock_abi()
        if abi < 1:
            return {}
        write = FS_WRITE | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
        fs = write | FS_READ
        net = 3 if abi >= 4 else 0  # TCP bind, TCP connect
        scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals
        attr = (c.c_uint64 * 3)(fs, net, scoped)
        size = 8 if abi < 4 else 16 if abi < 6 else 24
        rs = sc(c.c_long(SYS_CREATE_RULESET), c.byref(attr), c.c_size_t(size), c.c_uint32(0))
        if rs < 0:
            return {}

        class Beneath(c.Structure):  # struct landlock_path_beneath_attr
            _pack_ = 1
            _fields_ = [("allowed", c.c_uint64), ("fd", c.c_int32)]

        self._allow(rs, Beneath, tmp, fs)
        self._allow(rs, Beneath, "/dev/null", fs & FS_FILE)
        for p in reads:
            self._allow(rs, Beneath, p, FS_READ)
        ok = sc(c.c_long(SYS_RESTRICT_SELF), c.c_int(rs), c.c_uint32(0)) == 0
        os.close(rs)
        return {"landlock": abi, "ll_net": bool(net), "ll_scope": bool(scoped)} if ok else {}

    def _allow(self, ruleset, beneath, path, rights):
        """One path-beneath rule; a missing path is skipped (symlinks resolve here)."""
        c = self.c
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                rights &= FS_FILE
            self.lib.syscall(c.c_long(SYS_ADD_RULE), c.c_int(ruleset), c.c_int(1),
                             c.byref(beneath(rights, fd)), c.c_uint32(0))
        finally:
            os.close(fd)


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


def _children():
    """{parent pid: [(pid, state), ...]} from one snapshot of /proc."""
    kids: dict = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                kids.setdefault(int(fields[1]), []).append((int(name), fields[0]))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def kill_descendants():
    """Without a pid namespace: we are a child subreaper, so orphans (even ones that left
    the process group with setsid) are re-parented to us. Kill every descendant found in
    one snapshot of /proc, reap, repeat until none is left (a fork bomb refills slowly:
    its dead stay counted against RLIMIT_NPROC until reaped)."""
    me = os.getpid()
    for _ in range(200):
        kids = _children()
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


def enter_namespaces(spec, ab, applied):
    """In the outer runner: drop to ``nobody`` (when that can still read the interpreter),
    take network and pid namespaces, die with the parent, and become a child subreaper
    where there is no pid namespace."""
    if spec["drop"] == "full":
        become(*spec["nobody"])
        applied["user"] = "nobody"
    if ab is None:
        return
    if spec["drop"] == "dac" and ab.unshare(NEWNS_NET | NEWNS_PID):
        applied["ns"] = "net,pid"
    elif spec["drop"] != "dac" and ab.unshare(NEWNS_USER | NEWNS_NET | NEWNS_PID):
        applied["ns"] = "user,net,pid"
    ab.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the parent's thread
    if os.getppid() != spec["ppid"]:
        os._exit(3)
    if "pid" not in applied["ns"]:
        applied["reaper"] = ab.prctl(PR_SET_CHILD_SUBREAPER, 1) == 0


def drop_user(spec, ab, applied):
    """As root where ``nobody`` cannot read the interpreter: become ``nobody`` keeping one
    capability for reading files."""
    cap = file_cap() if ab is not None and spec["drop"] == "dac" else None
    if cap is not None:
        ab.prctl(PR_SET_KEEPCAPS, 1)
        become(*spec["nobody"])
        kept = ab.keep_cap(cap)
        applied["user"] = ("nobody+read" if cap == 2 else "nobody+override") if kept \
            else "nobody"
    elif spec["drop"] == "dac":
        applied["user"] = "root"  # nobody could not even import the standard library


def set_rlimits(lim, applied):
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


def harden(spec, ab, applied):
    """In the process that will run the sample (and pass it on to its children): the uid,
    no new privileges, Landlock, rlimits; last, die with the outer runner (a uid change
    clears that)."""
    drop_user(spec, ab, applied)
    if ab is not None:
        ab.prctl(PR_SET_DUMPABLE, 1)  # again (a uid change clears it; /proc/self needs it)
        ab.prctl(PR_SET_NO_NEW_PRIVS, 1)
        applied.update(ab.landlock(spec["tmp"], read_paths(spec["reads"])))
        applied["ll_read"] = "landlock" in applied
    set_rlimits(spec["limits"], applied)
    if ab is not None:
        ab.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
