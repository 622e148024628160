"""``ssd-local compare``'s output: every evaluation as a row (each model's best marked, the
base at the distillation settings named), the differences with their paired intervals for
every k, the verdict, and what was written to the run. It renders the core's result only."""

from __future__ import annotations

from typing import Any

from .render import console

LABEL = {"sweep": "", "grid": " (grid)", "distillation settings": ""}


def label(row: dict[str, Any]) -> str:
    if row.get("distillation"):
        return "base at the distillation settings"
    return row["model"] + LABEL.get(row["role"], "")


def _cell(row: dict[str, Any], k: int) -> str:
    v = row.get(f"pass@{k}")
    if v is None:
        return "-"
    lo, hi = row["ci95"][f"pass@{k}"]
    return f"{100 * v:.1f}% [dim][{100 * lo:.1f}, {100 * hi:.1f}][/]"


def _diff(d: dict[str, Any]) -> str:
    return "; ".join(f"{k} {100 * x['value']:+.1f} points [{100 * x['ci95'][0]:+.1f}, "
                     f"{100 * x['ci95'][1]:+.1f}]" for k, x in d.items())


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("model", "temperature", "top_k", "top_p"))


def _order(row: dict[str, Any]) -> tuple:
    return (row["model"] != "base", bool(row.get("distillation")), row["temperature"],
            row["role"] != "sweep", row["top_k"], row["top_p"])


def compare_table(r: Any) -> None:
    from rich.table import Table

    c = console()
    table = Table(title=f"{r.run} on {r.benchmark}: {r.problems} problems x "
                        f"{r.samples_per_problem} samples")
    for name, justify in (("model", "left"), ("T", "right"), ("top-k", "right"),
                          ("top-p", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for k in r.ks:
        table.add_column(f"pass@{k} [95% interval]", justify="right")
    table.add_column("no code", justify="right")
    for row in sorted(r.rows, key=_order):
        best = _same(row, r.base_best) or _same(row, r.tuned_best)
        cells = [label(row) + (" *" if best else ""), f"{row['temperature']:g}",
                 str(row["top_k"] or "off"), f"{row['top_p']:g}" if row["top_p"] < 1 else "off",
                 *(_cell(row, k) for k in r.ks), str(row["no_code"])]
        table.add_row(*cells, style="bold" if best else None)
    c.print(table)
    c.print("[dim]* each model's best setting (pass@1); every pass@k is at that setting[/]")
    c.print(f"tuned best - base best: {_diff(r.difference)}")
    if r.vs_distillation_settings:
        c.print("tuned best - base at the distillation settings: "
                + _diff(r.vs_distillation_settings))
    c.print(f"[bold]{r.verdict}[/]")
    if r.measured:
        d = r.measured["decoding"]
        c.print(f"written to the run: serve, eval, export and its GGUFs now decode the tuned "
                f"model at T={d['temperature']:g} top-k={d['top_k'] or 'off'} "
                f"top-p={d['top_p']:g}" + (" (greedy)" if d["temperature"] == 0 else ""))
    c.print(f"plot: {r.plot}")
