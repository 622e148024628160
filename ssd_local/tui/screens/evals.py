"""Evaluations: base vs tuned across the temperature sweep (the core's ``comparisons()``)
as a table (every evaluation: the base at its own top-k/top-p, its grid points with
``--base-grid``, the base at the distillation settings, the tuned model; each model's best
starred) and a pass@1 chart, every evaluation's summary (``eval_summaries()``), and a
form that asks the app to run ``compare`` for a run in a worker."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Select, Static

from ...app.artefacts import Found, comparisons, eval_summaries
from ...app.runs import list_runs
from ...config import CompareConfig
from ..forms import ConfigForm, build_config
from ..jobs import compare_job
from ..messages import StartJob
from ..widgets import Chart, Series

# The comparison's knobs shown in the form; the rest keep the config's defaults.
COMPARE_KEYS = ("benchmark", "limit", "n", "k", "max_new_tokens", "base_grid")


def pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def rows_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A comparison's rows; one written before rows had a model (one row per temperature,
    base and tuned side by side) becomes two rows of unknown top-k/top-p."""
    out = []
    for row in r.get("rows", []):
        if "model" in row:
            out.append(row)
            continue
        for side in ("base", "tuned"):
            out.append({"model": side, "role": "sweep", "temperature": row["temperature"],
                        "top_k": None, "top_p": None, "pass@1": row.get(f"{side} pass@1")})
    return out


def truncation(row: dict[str, Any], key: str = "top_k") -> str:
    v = row.get(key)
    if v is None:
        return "?"
    off = v == 0 if key == "top_k" else v >= 1
    return "off" if off else f"{v:g}"


def row_label(row: dict[str, Any]) -> str:
    if row.get("distillation"):
        return "base, distillation"
    return row["model"] + (" (grid)" if row.get("role") == "grid" else "")


def row_order(row: dict[str, Any]) -> tuple:
    return (row["model"] != "base", bool(row.get("distillation")), row.get("role") != "sweep",
            row["temperature"], row.get("top_k") or 0, row.get("top_p") or 1.0)


def is_best(row: dict[str, Any], r: dict[str, Any]) -> bool:
    b = r.get(f"{row['model']}_best") or {}
    return all(b.get(k) == row.get(k) for k in ("temperature", "top_k", "top_p") if k in b)


def chart_series(r: dict[str, Any]) -> list[Series]:
    """pass@1 against T: the base at its own top-k/top-p, the tuned model (each with its
    best marked), the base at the distillation settings as one marked point."""
    out = []
    for side, style in (("base", "grey70"), ("tuned", "dodger_blue1")):
        rows = sorted((x for x in rows_of(r) if x["model"] == side
                       and x.get("role") == "sweep"), key=lambda x: x["temperature"])
        b = r.get(f"{side}_best") or {}
        out.append(Series(side, tuple((x["temperature"], 100 * (x.get("pass@1") or 0))
                                      for x in rows), style,
                          (b["temperature"], 100 * (b.get("pass@1") or 0)) if b else None))
    s = r.get("distillation_settings") or {}
    if s:
        p = (s["temperature"], 100 * (s.get("pass@1") or 0))
        out.append(Series("base at the distillation settings", (p,), "red3", p))
    return out


class EvalsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("f5", "reload", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, Found] = {}  # the comparisons, by the picker's value
        self.shown: str | None = None  # the comparison the table and chart show

    def compose(self) -> ComposeResult:
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
                yield ConfigForm(CompareConfig, "eval-", only=("temperatures",),
                                 show_help=False, id="compare-sweep")
            yield ConfigForm(CompareConfig, "eval-", only=COMPARE_KEYS)
            yield Button("Run compare in the background", id="run-compare",
                         variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "evaluations"
        self.query_one("#compare-table", DataTable).add_columns("model", "T", "top-k",
                                                                "top-p", "pass@1")
        self.query_one("#summaries", DataTable).add_columns(
            "evaluation", "target", "benchmark", "pass@k", "problems x samples")
        self.action_reload()

    def action_reload(self) -> None:
        found = comparisons()
        self.found, self.shown = {str(f.path): f for f in found}, None
        pick = self.query_one("#compare-pick", Select)
        pick.set_options([(f.label, str(f.path)) for f in found])
        if found:
            pick.value = str(found[-1].path)
            self.show_compare()  # drawn before the first paint, not on the change event
        table = self.query_one("#summaries", DataTable)
        table.clear()
        for f in eval_summaries():
            s = f.data
            ks = ", ".join(f"{k} {pct(v)}" for k, v in s.items() if k.startswith("pass@"))
            table.add_row(f.label, str(s.get("target", "")), str(s.get("benchmark", "")), ks,
                          f"{s.get('problems', '?')} x {s.get('samples_per_problem', '?')}")

    @on(Select.Changed, "#compare-pick")
    def show_compare(self) -> None:
        value = self.query_one("#compare-pick", Select).value
        if value == self.shown:
            return
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        self.shown = value if isinstance(value, str) and value in self.found else None
        if self.shown is None:
            return
        r = self.found[value].data
        for row in sorted(rows_of(r), key=row_order):
            star = " ★" if is_best(row, r) else ""
            table.add_row(row_label(row), f"{row['temperature']:g}", truncation(row),
                          truncation(row, "top_p"), pct(row.get("pass@1")) + star)
        self.query_one("#compare-chart", Chart).series = chart_series(r)
        self.query_one("#verdict", Static).update(
            f"[b]{r.get('verdict', '')}[/]\n[dim]{r.get('problems')} problems x "
            f"{r.get('samples_per_problem')} samples on {r.get('benchmark')}; "
            "★ each model's best setting[/]")

    @on(Button.Pressed, "#run-compare")
    def run_compare(self) -> None:
        run = self.query_one("#compare-run", Select).value
        cfg, _ = build_config(self, CompareConfig)
        if not isinstance(run, str) or cfg is None:
            self.notify("pick a run and fix the fields marked in red", severity="warning")
            return
        self.post_message(StartJob(compare_job(run, cfg)))
