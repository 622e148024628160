"""Where ssd-local keeps things: ``$SSD_LOCAL_HOME`` (runs, converted models, evaluations)
and ``$SSD_LOCAL_CACHE`` (llama.cpp's converter), else the platform's user folders."""

from __future__ import annotations

import os
from pathlib import Path


def user_dir(env_var: str, kind: str) -> Path:
    """``$env_var`` if set, else the platform's user ``kind`` folder ("data", "cache")."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("ssd-local", appauthor=False))


def home() -> Path:
    """``$SSD_LOCAL_HOME``, else the platform's user data folder."""
    return user_dir("SSD_LOCAL_HOME", "data")


def cache_root() -> Path:
    return user_dir("SSD_LOCAL_CACHE", "cache")
