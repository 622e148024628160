"""CLI options generated from the config dataclasses: one ``--flag`` per field, with the
field's own default, type, choices and help. No default is written here."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from ..config import help_of

# options that both sampling and training have: training's get a train- prefix in distill
SHARED = ("seed", "batch_size", "backend")


def _base_type(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                       only: tuple[str, ...] | None = None,
                       skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per config field; defaults and help come from the field itself.
    ``prefix`` renames flags and destinations (``distill`` combines several stages)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        if only is not None and f.name not in only:
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        tp = _base_type(hints[f.name])
        default = None if f.default is MISSING else f.default
        shown = "" if default is None else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": default,
                                  "help": help_of(cls, f) + shown}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        group.add_argument(flag, **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, prefixed: tuple[str, ...] = (),
                     prefix: str = "") -> Any:
    values = {}
    for f in fields(cls):
        dest = (prefix.replace("-", "_") + f.name) if f.name in prefixed else f.name
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return cls(**values)
