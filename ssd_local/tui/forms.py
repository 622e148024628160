"""Form fields generated from the config dataclasses, like the CLI's options: a field's
type, default, choices and one-line help come from the dataclass, and validation is the
config's own ``validate()``, so the form never disagrees with ``ssd-local distill``."""

from __future__ import annotations

import re
import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from ..config import help_of
from ..errors import UserError

# SSD vocabulary for a few field names; the rest read as their name.
LABELS = {"temperature": "T_train", "top_k": "top-k", "top_p": "top-p",
          "max_steps": "steps", "lr": "learning rate", "quant": "quant types",
          "t_eval": "T_eval", "prompts": "prompt source"}


def label_of(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def base_type(tp: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of an ``X | None`` annotation."""
    args = typing.get_args(tp)
    if args:
        return next(a for a in args if a is not type(None)), type(None) in args
    return tp, False


class FieldRow(Vertical):
    """One config field: label, input, the field's help (unless ``show_help`` is off, for a
    row that shares its line), and an inline error line."""

    DEFAULT_CLASSES = "field-row"

    def __init__(self, cls: type, f: Field, prefix: str, show_help: bool = True):
        super().__init__(id=f"row-{prefix}{f.name}")
        self.cls, self.field, self.prefix, self.show_help = cls, f, prefix, show_help
        self.type, self.optional = base_type(typing.get_type_hints(cls)[f.name])

    @property
    def input_id(self) -> str:
        return f"{self.prefix}{self.field.name}"

    def compose(self) -> ComposeResult:
        meta, default = self.field.metadata, self.field.default
        default = None if default is MISSING else default
        with Horizontal(classes="field-line"):
            yield Label(label_of(self.field.name), classes="field-label")
            if self.type is bool and self.optional:  # on / off / auto (None)
                yield Select([("on", True), ("off", False)], id=self.input_id,
                             value=Select.NULL if default is None else default,
                             allow_blank=True, prompt="auto", compact=True)
            elif self.type is bool:
                yield Checkbox(value=bool(default), id=self.input_id, compact=True)
            elif meta.get("choices"):
                yield Select([(c, c) for c in meta["choices"]], id=self.input_id,
                             value=default if default is not None else Select.NULL,
                             allow_blank=self.optional,
                             prompt="auto" if self.optional else "Select", compact=True)
            else:
                yield Input("" if default is None else str(default), id=self.input_id,
                            placeholder="default" if self.optional else "",
                            compact=True)
            if self.show_help:
                yield Static(help_of(self.cls, self.field), classes="field-help")
        yield Static("", classes="field-error")

    def raw(self) -> Any:
        w = self.query_one(f"#{self.input_id}")
        if isinstance(w, Checkbox):
            return w.value
        if isinstance(w, Select):
            return None if w.value is Select.NULL else w.value
        return typing.cast(Input, w).value

    def parse(self) -> Any:
        """The typed value; raises ``UserError`` with a message for the inline error."""
        raw = self.raw()
        if not isinstance(raw, str) or self.type is str:
            return raw if raw != "" or not self.optional else None
        if raw.strip() == "":
            if self.optional:
                return None
            raise UserError("required")
        try:
            return self.type(raw.strip())
        except ValueError:
            kind = {int: "a whole number", float: "a number"}.get(self.type, str(self.type))
            raise UserError(f"{raw.strip()!r} is not {kind}") from None

    def show_error(self, message: str) -> None:
        err = self.query_one(".field-error", Static)
        err.update(message)
        err.display = bool(message)
        self.set_class(bool(message), "-invalid")


class ConfigForm(Vertical):
    """The rows of ``cls``'s fields named in ``only``, in that order (by default all CLI
    fields, in the dataclass's order), less those in ``skip``."""

    def __init__(self, cls: type, prefix: str, only: tuple[str, ...] | None = None,
                 skip: tuple[str, ...] = (), show_help: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.cls, self.prefix, self.show_help = cls, prefix, show_help
        cli = [f.name for f in fields(cls) if f.metadata.get("cli", True)]
        self.names = [n for n in (cli if only is None else [n for n in only if n in cli])
                      if n not in skip]

    def compose(self) -> ComposeResult:
        by_name = {f.name: f for f in fields(self.cls)}
        for name in self.names:
            yield FieldRow(self.cls, by_name[name], self.prefix, self.show_help)


def rows_of(root: Widget, cls: type) -> dict[str, FieldRow]:
    return {r.field.name: r for r in root.query(FieldRow) if r.cls is cls}


def build_config(root: Widget, cls: type) -> tuple[Any, dict[str, str]]:
    """The config from every row of ``cls`` under ``root`` (fields without a row keep
    their defaults), and the errors by field name; each row shows its own error."""
    rows = rows_of(root, cls)
    values, errors = {}, {}
    for name, row in rows.items():
        try:
            values[name] = row.parse()
        except UserError as exc:
            errors[name] = str(exc)
    cfg = None
    if not errors:
        try:
            cfg = cls(**values)
            if hasattr(cfg, "validate"):
                cfg.validate()
        except UserError as exc:
            errors[_field_named(str(exc), list(rows)) or next(iter(rows))] = str(exc)
            cfg = None
    for name, row in rows.items():
        row.show_error(errors.get(name, ""))
    return cfg, errors


def _field_named(message: str, names: list[str]) -> str | None:
    """The field a core error message is about: it names the CLI flag (``--top-p``)."""
    flags = re.findall(r"--([a-z0-9-]+)", message)
    for flag in flags:
        name = flag.replace("-", "_")
        if name in names:
            return name
    return None
