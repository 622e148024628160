"""Evaluations: base vs tuned across the temperature sweep (``RUN/evals/compare-*.json``)
as a table and a pass@1 chart, every evaluation's ``summary.json``, and a form that runs
``compare`` for a run in a worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from ...app.runs import home, list_runs, runs_root
from ..forms import ConfigForm, build_config
from ..widgets import Chart, Series

if TYPE_CHECKING:
    from ..app import SSDApp


def compare_files() -> list[Path]:
    return sorted(runs_root().glob("*/evals/compare-*.json")) if runs_root().exists() else []


def summary_files() -> list[Path]:
    found = list(runs_root().glob("*/evals/*/summary.json")) if runs_root().exists() else []
    return sorted(found) + sorted((home() / "evals").glob("*/summary.json"))


def pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


class EvalsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("f5", "reload", "Refresh")]

    def compose(self) -> ComposeResult:
        from ...app.evaluation.compare import DEFAULT_SWEEP
        from ...app.evaluation.evaluate import EvalConfig

        yield Header()
        with VerticalScroll(id="evals"):
            yield Static("Base vs tuned (compare)", classes="section")
            with Horizontal(classes="field-line"):
                yield Label("result", classes="field-label")
                yield Select([], id="compare-pick", prompt="no comparison yet", compact=True)
            with Horizontal(id="compare-view"):
                yield DataTable(id="compare-table", cursor_type="row")
                yield Chart(y_format="{:.0f}%", id="compare-chart")
            yield Static("", id="verdict")
            yield Static("Evaluations (summary.json)", classes="section")
            yield DataTable(id="summaries", cursor_type="row", zebra_stripes=True)
            yield Static("Run a comparison", classes="section")
            with Horizontal(classes="field-line"):
                yield Label("run", classes="field-label")
                yield Select([(r.name, r.name) for r in list_runs()
                              if r.stages.get("fuse") == "done"], id="compare-run",
                             prompt="a run with a tuned model", compact=True)
                yield Label("temperatures", classes="field-label")
                yield Input(DEFAULT_SWEEP, id="temperatures", compact=True)
            yield ConfigForm(EvalConfig, "eval-", only=("benchmark", "limit", "n", "k",
                                                        "max_new_tokens"))
            yield Button("Run compare in the background", id="run-compare",
                         variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "evaluations"
        self.query_one("#compare-table", DataTable).add_columns("T", "base pass@1",
                                                                "tuned pass@1")
        self.query_one("#summaries", DataTable).add_columns(
            "evaluation", "target", "benchmark", "pass@k", "problems x samples")
        self.action_reload()

    def action_reload(self) -> None:
        files = compare_files()
        pick = self.query_one("#compare-pick", Select)
        pick.set_options([(f"{p.parents[1].name}: {p.stem.removeprefix('compare-')}", str(p))
                          for p in files])
        if files:
            pick.value = str(files[-1])
        table = self.query_one("#summaries", DataTable)
        table.clear()
        for p in summary_files():
            try:
                s = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            ks = ", ".join(f"{k} {pct(v)}" for k, v in s.items() if k.startswith("pass@"))
            where = p.parent.name if p.parents[2] == home() else \
                f"{p.parents[2].name}/{p.parent.name}"
            table.add_row(where, str(s.get("target", "")), str(s.get("benchmark", "")), ks,
                          f"{s.get('problems', '?')} x {s.get('samples_per_problem', '?')}")

    @on(Select.Changed, "#compare-pick")
    def show_compare(self) -> None:
        value = self.query_one("#compare-pick", Select).value
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        if not isinstance(value, str):
            return
        r = json.loads(Path(value).read_text())
        best = {side: r.get(f"{side}_best", {}).get("temperature") for side in ("base",
                                                                                 "tuned")}
        for row in r.get("rows", []):
            t = row["temperature"]
            table.add_row(f"{t:g}", *(pct(row.get(f"{side} pass@1"))
                                      + (" ★" if best[side] == t else "")
                                      for side in ("base", "tuned")))
        self.query_one("#compare-chart", Chart).series = [
            Series(side, tuple((row["temperature"], 100 * (row.get(f"{side} pass@1") or 0))
                               for row in r.get("rows", [])), style,
                   (best[side], 100 * (r.get(f"{side}_best", {}).get("pass@1") or 0))
                   if best[side] is not None else None)
            for side, style in (("base", "grey70"), ("tuned", "dodger_blue1"))]
        self.query_one("#verdict", Static).update(
            f"[b]{r.get('verdict', '')}[/]\n[dim]{r.get('problems')} problems x "
            f"{r.get('samples_per_problem')} samples on {r.get('benchmark')}; "
            "★ each model's best temperature[/]")

    @on(Button.Pressed, "#run-compare")
    def run_compare(self) -> None:
        from ...app.errors import UserError
        from ...app.evaluation.compare import parse_sweep
        from ...app.evaluation.evaluate import EvalConfig
        from ..jobs import compare_job

        run = self.query_one("#compare-run", Select).value
        cfg, errors = build_config(self, EvalConfig)
        if not isinstance(run, str) or cfg is None:
            self.notify("pick a run and fix the fields marked in red", severity="warning")
            return
        try:
            temps = parse_sweep(self.query_one("#temperatures", Input).value)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        cast("SSDApp", self.app).start_job(compare_job(run, cfg, temps))
