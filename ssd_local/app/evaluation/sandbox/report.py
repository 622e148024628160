"""Host side: what this machine actually gives the sandbox, in words, from one probe job."""

from __future__ import annotations

import os
import sys
from typing import Any

from .host import Host, Job, Limits, execute, host

_prot_cache: dict[str, str] | None = None


def _filesystem(out: dict[str, Any], h: Host) -> str:
    if out.get("landlock"):
        fs = "landlock: writes only inside the sample's temp dir"
        if out.get("ll_read"):
            fs += "; reads only the Python install and system dirs"
        return fs
    if h.wrap:
        return "sandbox-exec: writes only inside the sample's temp dir"
    user = out.get("user", "self")
    return ("NOT confined: the sample can write wherever "
            + ("nobody" if user != "self" else "you") + " can")


def _network(out: dict[str, Any], ns: str, h: Host) -> str:
    if "net" in ns:
        return "none: own network namespace"
    if out.get("ll_net"):
        return "landlock: TCP connect/bind denied (UDP not covered)"
    if h.wrap:
        return "sandbox-exec: denied"
    return "NOT blocked: the sample can reach the network"


def _processes(out: dict[str, Any], ns: str) -> str:
    if "pid" in ns:
        text = "own pid namespace: everything dies with the sample"
    elif out.get("reaper"):
        text = ("no pid namespace: the runner kills every process the sample started when "
                "it ends")
    else:
        text = "process group only: NOT contained if the sample starts a new session"
    if out.get("ll_scope"):
        text += "; cannot signal outside processes"
    return text


def _user(user: str, ns: str) -> str:
    if user == "nobody+read":
        return ("runs as nobody (dropped from root), keeping read access to files "
                "(the Python install is not readable by nobody)")
    if user == "nobody+override":
        return ("runs as nobody (dropped from root), keeping root's file access "
                "(CAP_DAC_OVERRIDE: the Python install is not readable by nobody)")
    if user == "nobody":
        return "runs as nobody (dropped from root)"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ("NOT dropped: runs as root (nobody cannot read the Python install "
                "and no capability to keep was available)")
    return "runs as the current user" + (" in its own user namespace" if "user" in ns else "")


def protections() -> dict[str, str]:
    """What this machine actually gives the sandbox, from one probe job (run once, cached):
    one line each for ``process``, ``filesystem``, ``network``, ``processes``, ``user``;
    a layer that is missing says ``NOT``."""
    global _prot_cache
    if _prot_cache is not None:
        return dict(_prot_cache)
    h = host()
    got = execute(Job("script", "pass\n"), Limits(), None)
    out: dict[str, Any] = dict((got[0].get("applied") if got else None) or {})
    ns = str(out.get("ns", ""))
    rl = ("rlimits (cpu, memory, file size, open files, processes)"
          if sys.platform.startswith("linux") else
          "rlimits (cpu, file size, open files; memory and processes are NOT capped here)")
    prot = {"process": f"own session, {rl}, wall timeout kills the group",
            "filesystem": _filesystem(out, h),
            "network": _network(out, ns, h),
            "processes": _processes(out, ns),
            "user": _user(out.get("user", "self"), ns)}
    _prot_cache = prot
    return dict(prot)
