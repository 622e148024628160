"""Small widgets: a braille line chart (loss curves, pass@1 against temperature), the
stage stepper and a sample as it should be read. All draw only what they are given."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Braille cells are 2 dots wide and 4 high; bit of the dot at (column, row).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]
    style: str
    marker: tuple[float, float] | None = None  # one point to mark (a best setting)


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The pixels of a straight segment (Bresenham)."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err, out = dx + dy, []
    while True:
        out.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return out
        e2 = 2 * err
        if e2 >= dy:
            err, x0 = err + dy, x0 + sx
        if e2 <= dx:
            err, y0 = err + dx, y0 + sy


def plot(series: list[Series], width: int, height: int, y_format: str = "{:.3g}",
         x_format: str = "{:g}") -> Text:
    """Draw ``series`` into ``width`` x ``height`` terminal cells: a y axis on the left,
    the x range and a legend on the last line. Later series draw over earlier ones."""
    pts = [p for s in series for p in s.points if all(map(math.isfinite, p))]
    if not pts or width < 12 or height < 3:
        return Text("no data yet", style="dim")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    labels = [y_format.format(y1), y_format.format(y0)]
    axis = max(map(len, labels)) + 1
    cols, rows = width - axis - 1, height - 1
    pw, ph = cols * 2, rows * 4
    cells: dict[tuple[int, int], tuple[int, str]] = {}

    def to_px(p: tuple[float, float]) -> tuple[int, int]:
        return (round((p[0] - x0) / (x1 - x0) * (pw - 1)),
                round((y1 - p[1]) / (y1 - y0) * (ph - 1)))

    for s in series:
        px = [to_px(p) for p in s.points if all(map(math.isfinite, p))]
        dots = [d for a, b in zip(px, px[1:]) for d in _line(*a, *b)] or px
        for x, y in dots:
            key = (x // 2, y // 4)
            bits = cells.get(key, (0, ""))[0] | _DOTS[y % 4][x % 2]
            cells[key] = (bits, s.style)
    marks = {}
    for s in series:
        if s.marker:
            x, y = to_px(s.marker)
            marks[(x // 2, y // 4)] = s.style
    out = Text()
    for r in range(rows):
        label = labels[0] if r == 0 else labels[1] if r == rows - 1 else ""
        out.append(label.rjust(axis - 1) + " ┤" if label else " " * axis + "│", "dim")
        for c in range(cols):
            if (c, r) in marks:
                out.append("★", f"bold {marks[(c, r)]}")
            elif (c, r) in cells:
                bits, style = cells[(c, r)]
                out.append(chr(0x2800 + bits), style)
            else:
                out.append(" ")
        out.append("\n")
    left, right = x_format.format(x0), x_format.format(x1)
    out.append(" " * axis + left, "dim")
    legend = Text("  ").join(Text(f"━ {s.label}", s.style) for s in series)
    gap = max(1, cols - len(left) - len(right) - legend.cell_len)
    out.append(" " * (gap // 2))
    out.append_text(legend)
    out.append(" " * (gap - gap // 2) + right, "dim")
    return out


class Chart(Widget):
    """A line chart that redraws itself at its current size."""

    series: reactive[list[Series]] = reactive(list, always_update=True)

    def __init__(self, y_format: str = "{:.3g}", x_format: str = "{:g}", **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.y_format, self.x_format = y_format, x_format

    def render(self) -> Text:
        return plot(self.series, self.content_size.width, self.content_size.height,
                    self.y_format, self.x_format)


STATE_MARK = {"pending": ("○", "dim"), "running": ("◐", "bold yellow"),
              "done": ("●", "bold green"), "cancelled": ("◍", "magenta"),
              "interrupted": ("◍", "magenta"), "failed": ("✖", "bold red")}


def stage_text(stages: dict[str, str]) -> Text:
    """``sample ● ─ train ◐ ─ ...``: one mark per stage state."""
    out = Text()
    for i, (name, state) in enumerate(stages.items()):
        if i:
            out.append(" ──── ", "dim")
        mark, style = STATE_MARK.get(state, ("?", ""))
        out.append(f"{mark} {name}", style)
        out.append(f" {state}", "dim")
    return out


def sample_renderable(s: dict[str, Any]) -> Group:
    """A sample as the user should read it: its flags and token counts, then the answer,
    highlighted (markdown with fenced code, or plain Python)."""
    flags = [f for f in (s.get("degenerate"), "looped" if s.get("looped") else None,
                         "cut at max tokens" if s.get("finish_reason") == "length" else None,
                         "code block" if s.get("has_code") else "no code block") if f]
    head = Text(f"{s.get('prompt_id')}#{s.get('sample_index')}  ", style="bold")
    head.append(f"{s.get('prompt_tokens', '?')} prompt + {s.get('completion_tokens', '?')} "
                f"answer tokens  {', '.join(flags)}", style="dim")
    text = s.get("completion", "")
    lexer = "markdown" if "```" in text else "python"
    return Group(head, Syntax(text or "(empty)", lexer, theme="monokai", word_wrap=True,
                              background_color="default"))
