"""Samples browser: page through a run's prompts and their samples, filter the ones the
degeneracy marks flag, read each answer highlighted with its token counts."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Select, Static

from ...app.runs import Run
from ..widgets import sample_renderable

PAGE = 100
# The marks sampling stored on each sample (see app/filters.py), as filters.
FILTERS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "all": ("all samples", lambda s: True),
    "degenerate": ("degenerate (empty or one line)", lambda s: bool(s.get("degenerate"))),
    "looped": ("ends in a repetition loop", lambda s: bool(s.get("looped"))),
    "length": ("cut at the length limit", lambda s: s.get("finish_reason") == "length"),
    "code": ("with a code block", lambda s: bool(s.get("has_code"))),
    "nocode": ("without a code block", lambda s: not s.get("has_code")),
}


class SamplesScreen(Screen[None]):
    BINDINGS = [Binding("right_square_bracket", "page(1)", "Next page"),
                Binding("left_square_bracket", "page(-1)", "Previous page"),
                Binding("f", "focus_filter", "Filter"),
                Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run: str):
        """Raises ``UserError`` for a run that does not exist."""
        super().__init__()
        self.run_name = run
        self.samples: list[dict[str, Any]] = Run.load(run).read_samples()
        self.shown: list[dict[str, Any]] = []
        self.page = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="samples"):
            with Vertical(id="samples-left"):
                with Horizontal(classes="field-line"):
                    yield Label("show", classes="field-label")
                    yield Select([(text, key) for key, (text, _) in FILTERS.items()],
                                 value="all", allow_blank=False, id="filter", compact=True)
                yield Static("", id="page-info")
                yield DataTable(id="sample-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="sample-detail"):
                yield Static("", id="sample-prompt")
                yield Static("", id="sample-answer")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"samples of run {self.run_name}"
        table = self.query_one("#sample-table", DataTable)
        table.add_columns("prompt", "#", "tokens", "finish", "marks")
        self.apply_filter()
        table.focus()

    def apply_filter(self) -> None:
        key = self.query_one("#filter", Select).value
        test = FILTERS[key if isinstance(key, str) else "all"][1]
        self.shown = [s for s in self.samples if test(s)]
        self.page = 0
        self.show_page()

    def show_page(self) -> None:
        pages = max(1, -(-len(self.shown) // PAGE))
        self.page = max(0, min(self.page, pages - 1))
        rows = self.shown[self.page * PAGE:(self.page + 1) * PAGE]
        self.query_one("#page-info", Static).update(Text(
            f"{len(self.shown)} of {len(self.samples)} samples, page {self.page + 1}/{pages} "
            "(keys [ and ] turn pages)"))
        table = self.query_one("#sample-table", DataTable)
        table.clear()
        for i, s in enumerate(rows):
            marks = ", ".join(m for m in (s.get("degenerate"),
                                          "looped" if s.get("looped") else "",
                                          "code" if s.get("has_code") else "") if m)
            table.add_row(s.get("prompt_id", "?"), str(s.get("sample_index", 0)),
                          str(s.get("completion_tokens", "?")), s.get("finish_reason", "?"),
                          marks, key=str(self.page * PAGE + i))
        if rows:
            self.show_sample(rows[0])
        else:
            self.query_one("#sample-prompt", Static).update(
                Text("no sample matches this filter", style="dim"))
            self.query_one("#sample-answer", Static).update("")

    def show_sample(self, s: dict[str, Any]) -> None:
        self.query_one("#sample-prompt", Static).update(
            Text.assemble(("prompt ", "bold"), (s.get("prompt", ""), "")))
        self.query_one("#sample-answer", Static).update(sample_renderable(s))

    @on(Select.Changed, "#filter")
    def _filter(self) -> None:
        self.apply_filter()

    @on(DataTable.RowHighlighted, "#sample-table")
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.show_sample(self.shown[int(event.row_key.value)])

    def action_page(self, step: int) -> None:
        self.page += step
        self.show_page()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Select).focus()
