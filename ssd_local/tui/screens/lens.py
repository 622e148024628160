"""The lens: a run's base-vs-tuned measurements per token (``RUN/lens/lens-*.json``, the
core's ``lens_results()``) as a summary table, the tail mass per token of the longest
text as a chart and as a strip of its tokens coloured by label, and a form that asks the
app to run the lens for a run in a worker."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Select, Static

from ...app.artefacts import Found
from ...app.lens.report import lens_results
from ...app.runs import list_runs
from ...config import LensConfig
from ..forms import ConfigForm, build_config
from ..jobs import lens_job
from ..messages import StartJob
from ..widgets import Chart, Series

# The lens's knobs shown in the form; the rest keep the config's defaults.
LENS_KEYS = ("source", "limit", "max_tokens", "temperature", "top_k", "top_p")
ROWS = (("tail mass at locks", "tail_mass_at_lock"),
        ("head entropy at forks", "head_entropy_at_fork"),
        ("kept mass", "kept_mass"), ("survivors at forks", "survivors_at_fork"),
        ("tokens inside the set", "in_set"))
STYLE = {"lock": "green", "fork": "bold magenta", "neither": ""}


def num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def strip(text: dict[str, Any], width: int = 400) -> Text:
    """The text's tokens, each coloured by its label (lock green, fork magenta)."""
    out = Text()
    for piece, lab in zip(text.get("pieces", []), text.get("label", [])):
        out.append(piece, STYLE.get(lab, ""))
        if out.cell_len > width:
            out.append(" …", "dim")
            break
    return out


class LensScreen(Screen[None]):
    DEFAULT_CSS = """
    #lens { padding: 0 1; }
    #lens-view { height: 12; }
    #lens-table { width: 70; }
    #lens-chart { width: 1fr; height: 12; }
    #lens-strip { height: auto; max-height: 6; margin: 1 0 0 0; }
    #lens-note { height: auto; color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("f5", "reload", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, Found] = {}
        self.shown: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="lens"):
            yield Static("Lens: base vs tuned, per token", classes="section")
            with Horizontal(classes="field-line"):
                yield Label("result", classes="field-label")
                yield Select([], id="lens-pick", prompt="no lens result yet", compact=True)
            with Horizontal(id="lens-view"):
                yield DataTable(id="lens-table", cursor_type="row")
                yield Chart(y_format="{:.2f}", id="lens-chart")
            yield Static("", id="lens-strip")
            yield Static("", id="lens-note")
            yield Static("Run the lens", classes="section")
            with Horizontal(classes="field-line"):
                yield Label("run", classes="field-label")
                yield Select([(r.name, r.name) for r in list_runs()
                              if r.stages.get("fuse") == "done"], id="lens-run",
                             prompt="a run with a tuned model", compact=True)
            yield ConfigForm(LensConfig, "lens-", only=LENS_KEYS)
            yield Button("Run the lens in the background", id="run-lens", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "lens"
        self.query_one("#lens-table", DataTable).add_columns("measure", "base", "tuned",
                                                             "tuned - base")
        self.action_reload()

    def action_reload(self) -> None:
        found = lens_results()
        self.found, self.shown = {str(f.path): f for f in found}, None
        pick = self.query_one("#lens-pick", Select)
        pick.set_options([(f.label, str(f.path)) for f in found])
        if found:
            pick.value = str(found[-1].path)
            self.show_result()

    @on(Select.Changed, "#lens-pick")
    def show_result(self) -> None:
        value = self.query_one("#lens-pick", Select).value
        if value == self.shown:
            return
        table = self.query_one("#lens-table", DataTable)
        table.clear()
        self.shown = value if isinstance(value, str) and value in self.found else None
        if self.shown is None:
            return
        r = self.found[self.shown].data
        s = r.get("summary", {})
        own = {side: s.get(side, {}).get("own_labels", {}) for side in ("base", "tuned")}
        table.add_row("lock / fork positions", *(f"{own[side].get('lock', 0)} / "
                                                 f"{own[side].get('fork', 0)}"
                                                 for side in ("base", "tuned")), "")
        for title, key in ROWS:
            d = s.get("difference", {}).get(key) or {}
            table.add_row(title, num(s.get("base", {}).get(key)),
                          num(s.get("tuned", {}).get(key)),
                          "" if d.get("value") is None else f"{d['value']:+.4g}")
        texts = r.get("texts", [])
        longest = max(texts, key=lambda t: len(t.get("tokens", [])), default={})
        self.query_one("#lens-chart", Chart).series = [
            Series(f"{side} tail mass", tuple(enumerate(longest.get(side, {}).get("tail", []))),
                   style) for side, style in (("base", "grey70"), ("tuned", "dodger_blue1"))]
        self.query_one("#lens-strip", Static).update(strip(longest))
        d = r.get("decoding", {})
        texts_said = escape(str(r.get("source", {}).get("texts", "")))
        self.query_one("#lens-note", Static).update(
            f"{s.get('positions', 0)} tokens of {texts_said}; means at the base model's "
            "labels, counts by each model's own\n"
            f"T={d.get('temperature')} top-k={d.get('top_k')} top-p="
            f"{d.get('top_p')} ({escape(str(d.get('source', '')))})\n"
            f"rule: {escape(str(r.get('rule', '')))}\n[green]lock[/] [magenta]fork[/] "
            f"tokens of text {escape(str(longest.get('id', '')))}")

    @on(Button.Pressed, "#run-lens")
    def run_lens(self) -> None:
        run = self.query_one("#lens-run", Select).value
        cfg, _ = build_config(self, LensConfig)
        if not isinstance(run, str) or cfg is None:
            self.notify("pick a run and fix the fields marked in red", severity="warning")
            return
        self.post_message(StartJob(lens_job(run, cfg)))
