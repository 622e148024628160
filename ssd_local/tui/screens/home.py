"""Home: runs with their stage states, the models on this machine, and the hardware (the
app hands it over, once known: ``show_hardware``)."""

from __future__ import annotations

from typing import cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from ...app.inventory import Hardware, list_models
from ...app.runs import list_runs
from ...config import STAGES
from ..messages import NewRun, OpenSamples, ResumeRun
from ..widgets import STATE_MARK


class HomeScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "samples", "Samples", show=False),
        Binding("s", "samples", "Samples"),
        Binding("r", "resume", "Resume run"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self, hardware: Hardware | None = None):
        super().__init__()
        self.hardware = hardware

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="home"):
            with Vertical(id="home-left"):
                with Horizontal(id="home-actions"):
                    yield Button("New distillation (n)", id="new", variant="primary",
                                 action="app.new_run")
                    yield Button("Serve (v)", id="serve", action="app.serve")
                    yield Button("Evaluations (e)", id="evals", action="app.evals")
                yield Static("Runs", classes="section")
                yield Static("", id="runs-empty")
                yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="home-right"):
                yield Static("Hardware", classes="section")
                yield Static("detecting…", id="hardware")
                yield Static("Models", classes="section")
                yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        runs = self.query_one("#runs", DataTable)
        runs.add_columns("run", "model", *STAGES, "samples")
        self.query_one("#models", DataTable).add_columns("model", "kind", "source", "detail")
        self.refresh_data()
        self.draw_hardware()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        runs = self.query_one("#runs", DataTable)
        runs.clear()
        infos = list_runs()
        for r in infos:
            cells = []
            for s in STAGES:
                mark, style = STATE_MARK.get(r.stages[s], ("?", ""))
                cells.append(f"[{style}]{mark} {r.stages[s]}[/]")
            runs.add_row(r.name, r.model, *cells, str(r.samples), key=r.name)
        empty = self.query_one("#runs-empty", Static)
        empty.update("No runs yet. Press [b]n[/] to start a distillation of your own "
                     "model (the embedded smollm2-135m works offline).")
        empty.display = not infos
        models = self.query_one("#models", DataTable)
        models.clear()
        for m in list_models():
            models.add_row(m.ref if len(m.ref) < 48 else "…" + m.ref[-47:], m.kind, m.source,
                           m.detail, key=m.ref)

    def show_hardware(self, hw: Hardware) -> None:
        """The app detected the machine (or was told it)."""
        self.hardware = hw
        if self.is_mounted:
            self.draw_hardware()

    def draw_hardware(self) -> None:
        if self.hardware is not None:
            self.query_one("#hardware", Static).update(self.hardware.describe())

    def selected_run(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return cast(str, key.value)

    def action_samples(self) -> None:
        run = self.selected_run()
        if run:
            self.post_message(OpenSamples(run))

    def action_resume(self) -> None:
        run = self.selected_run()
        if run:
            self.post_message(ResumeRun(run))

    def action_refresh(self) -> None:
        self.refresh_data()

    @on(DataTable.RowSelected, "#runs")
    def _open_run(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenSamples(cast(str, event.row_key.value)))

    @on(DataTable.RowSelected, "#models")
    def _distill_model(self, event: DataTable.RowSelected) -> None:
        self.post_message(NewRun(cast(str, event.row_key.value)))
