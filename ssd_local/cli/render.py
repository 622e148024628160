"""Rich rendering for the CLI: the core's events as one progress bar per stage with rate
and ETA (logs and warnings above it), and the typed stage results as lines and tables. It
renders only what the core reports; it computes nothing."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from .. import events as ev


@lru_cache(maxsize=1)
def console() -> Console:
    return Console(stderr=False)


class EventRenderer:
    """Callable event sink: ``on_event=EventRenderer()``."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False,
            disable=quiet)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "EventRenderer":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}")

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.StageStarted):
            desc = e.stage + (f" ({e.detail})" if e.detail else "")
            if e.stage in self.tasks:
                self.progress.update(self.tasks[e.stage], total=e.total, completed=e.done,
                                     description=desc)
            else:
                self.tasks[e.stage] = self.progress.add_task(desc, total=e.total,
                                                             completed=e.done, rate="")
        elif isinstance(e, ev.Progress):
            if e.stage not in self.tasks:
                self.tasks[e.stage] = self.progress.add_task(e.stage, total=e.total, rate="")
            self.progress.update(self.tasks[e.stage], completed=e.done, total=e.total,
                                 rate=_rate(e.metrics))
        elif isinstance(e, ev.StageFinished):
            rep = e.summary.get("endpoint") if isinstance(e.summary, dict) else None
            if rep:
                why = ", ".join(f"{k} {v}" for k, v in rep["retry_reasons"].items())
                self.progress.console.print(
                    f"endpoint: {rep['requests']} requests, {rep['retries']} retried"
                    + (f" ({why})" if why else "") + f", {rep['failed']} failed, at most "
                    f"{rep.get('peak_in_flight', '?')} in flight")
            if e.stage in self.tasks and e.state == "done":
                t = self.progress.tasks[self.tasks[e.stage]]
                if t.total is not None:
                    self.progress.update(self.tasks[e.stage], completed=t.total)
        elif isinstance(e, ev.Warning):
            self.progress.console.print(f"[yellow]warning:[/] {e.message}")
        elif isinstance(e, ev.Log):
            self.progress.console.print(f"[dim]{e.message}")


def _rate(m: dict[str, float]) -> str:
    parts = []
    if "samples_per_s" in m:
        parts.append(f"{m['samples_per_s']:.2f} samples/s")
    if "loss" in m:
        parts.append(f"loss {m['loss']:.4f}")
    if "val_loss" in m:
        parts.append(f"val {m['val_loss']:.4f}")
    if "lr" in m:
        parts.append(f"lr {m['lr']:.2e}")
    if "tokens_per_s" in m:
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    if "in_flight" in m:
        parts.append(f"{m['in_flight']:.0f} in flight")
    if "passed" in m:
        parts.append(f"{m['passed']:.0f} passed")
    if "peak_mem_mb" in m:
        parts.append(f"{m['peak_mem_mb']:.0f} MB")
    return "  ".join(parts)


# -- results -----------------------------------------------------------------------------------
def sample_summary(run: Any, s: Any) -> None:
    c = console()
    c.print(f"[bold green]sampled[/] {s.samples} samples in run [bold]{run.name}[/]: "
            f"{run.samples_path}")
    c.print(f"  degenerate: {s.empty} empty, {s.stub} one-line; {s.looped} looped; "
            f"{s.length_capped} hit --max-new-tokens; {s.with_code} with a code block")


def train_summary(run: str, r: Any) -> None:
    val = f", val loss {r.val_loss:.4f}" if r.val_loss is not None else ""
    console().print(f"[bold green]trained[/] run [bold]{run}[/]: {r.steps} steps, train loss "
                    f"{r.train_loss:.4f}{val}")


def export_summary(run: str, result: Any) -> None:
    c = console()
    for q, g in result.ggufs.items():
        c.print(f"[bold green]{q}[/] {g.bytes / 2**20:.1f} MB  sha256 {g.sha256[:16]}")
    c.print(f"serve it: [bold]ssd-local serve {run}[/]")


def distill_summary(out: Any, base_url: str) -> None:
    c = console()
    s = out.sample
    c.print(f"[bold green]distilled[/] run [bold]{out.run}[/]")
    c.print(f"  samples: {s.samples} ({s.empty} empty, {s.stub} one-line, {s.looped} looped, "
            f"{s.length_capped} hit the length cap)")
    t = out.train or {}
    if t:
        val = t.get("val_loss")
        c.print(f"  training: {t.get('steps')} steps, final train loss "
                f"{t.get('train_loss', float('nan')):.4f}"
                + (f", val loss {val:.4f}" if val is not None else ""))
    for rel, size in out.ggufs.items():
        c.print(f"  {rel}: {size / 2**20:.1f} MB")
    d = out.recommended
    if d:
        c.print(f"  recommended decoding (T_eval): T={d.temperature:g} top-k={d.top_k} "
                f"top-p={d.top_p:g}")
    if out.ggufs:
        c.print(f"serve it:  [bold]ssd-local serve {out.run}[/]   (then point an OpenAI "
                f"client at {base_url})")


def serving(handle: Any) -> None:
    c = console()
    p = handle.plan
    c.print(f"serving [bold]{p.model_id}[/] ({p.path.name}) at [bold]{handle.base_url}[/]"
            f"  default decoding {p.decoding.describe()}")
    lay = handle.layout
    c.print(f"[dim]llama.cpp server: {lay.slots} slots ({lay.why}), {handle.cfg.n_ctx} "
            f"tokens each, on {lay.device}"
            + (f" ({lay.gpu_layers if lay.gpu_layers >= 0 else 'all'} layers)"
               if lay.device != "CPU" else f", {lay.threads} threads")
            + ("; tools: the template takes them" if lay.tools else
               "; tools: refused (HTTP 400), the model's chat template has none") + "[/]")
    for title, text in list(handle.snippets.items())[1:]:
        c.print(f"[dim]-- {title} --[/]")
        c.print(text, markup=False, highlight=False, soft_wrap=True)
    c.print("[dim]Loading the model (requests get 503 until it is ready); Ctrl-C stops the "
            "server.[/]")


def serving_ready(handle: Any) -> None:
    console().print(f"[bold green]ready[/]: {handle.model_id} answers at {handle.base_url}")


def models_table(rows: list[tuple[str, str, str]]) -> None:
    from rich.table import Table

    table = Table("name", "kind", "GGUFs")
    for name, kind, detail in rows:
        table.add_row(name, kind, detail)
    console().print(table)


def protections(prot: dict[str, str]) -> None:
    c = console()
    for key, text in prot.items():
        style = "red" if "NOT" in text else "dim"
        c.print(f"[{style}]sandbox {key}: {text}[/]")


def eval_summary(result: Any) -> None:
    from rich.table import Table

    s = result.summary
    c = console()
    table = Table("metric", "value", "95% interval (bootstrap over problems)")
    for key in [k for k in s if k.startswith("pass@")]:
        lo, hi = s["ci95"][key]
        table.add_row(key, f"{100 * s[key]:.1f}%", f"{100 * lo:.1f}% .. {100 * hi:.1f}%")
    c.print(table)
    c.print(f"{s['problems']} problems x {s['samples_per_problem']} samples"
            + (f" on {s['benchmark']}" if s.get("benchmark") else ""))
    for level, b in (s.get("by_difficulty") or {}).items():
        c.print(f"  {level}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in b.items()
                                            if k.startswith("pass@"))
                + f" ({b['problems']} problems)")
    if s.get("errors"):
        c.print("  failures: " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
    if "no_code" in s:
        c.print(f"  answers without extractable code: {s['no_code']} of {s['samples']}")
    protections(s.get("sandbox", {}))
    c.print(f"per-sample results: {result.folder / 'results.jsonl'}")


LENS_ROWS = (("tail mass at lock positions", "tail_mass_at_lock"),
             ("head entropy at fork positions (nats)", "head_entropy_at_fork"),
             ("kept mass, all positions", "kept_mass"),
             ("surviving tokens at fork positions", "survivors_at_fork"),
             ("top-token probability at locks", "top_prob_at_lock"),
             ("head entropy, all positions (nats)", "head_entropy"),
             ("surviving tokens, all positions", "survivors"),
             ("text tokens inside the truncation set", "in_set"),
             ("mean -log p of the text (T=1)", "nll"))


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def lens_table(report: Any) -> None:
    """``ssd-local lens``: base vs tuned at the same (base-labelled) positions."""
    from rich.table import Table

    s, c = report.summary, console()
    lab = s["labels"]
    table = Table(title=f"lens of {report.run}: {s['positions']} tokens of {s['texts']} "
                        f"texts ({lab['lock']} lock, {lab['fork']} fork, {lab['neither']} "
                        "neither)")
    table.add_column("measure")
    for name in ("base", "tuned", "tuned - base (95% interval over texts)"):
        table.add_column(name, justify="right")
    for title, key in LENS_ROWS:
        d = s["difference"].get(key)
        diff = "" if d is None or d["value"] is None else f"{d['value']:+.4g}" + (
            f"  [{d['ci95'][0]:+.3g}, {d['ci95'][1]:+.3g}]" if d["ci95"] else "")
        table.add_row(title, _num(s["base"].get(key)), _num(s["tuned"].get(key)), diff)
    own = s["tuned"]["own_labels"]
    table.add_row("[dim]tuned's own lock / fork count[/]",
                  f"{s['base']['own_labels']['lock']} / {s['base']['own_labels']['fork']}",
                  f"{own['lock']} / {own['fork']}", "")
    c.print(table)
    cmp = report.comparison
    c.print(f"texts: {report.source}")
    c.print(f"decoding: {report.decoding.describe()} ({report.decoding_source})")
    c.print(f"base: {cmp.base.model} ({cmp.base.engine}); tuned: {cmp.tuned.model} "
            f"({cmp.tuned.engine})")
    for note in report.notes:
        c.print(f"[dim]{note}[/]")
    c.print(f"[dim]rule: {report.rule}[/]")
    c.print(f"table: {report.json_path}\nplot:  {report.png_path}")


STATE_COLOUR = {"done": "green", "running": "yellow", "cancelled": "magenta", "failed": "red",
                "interrupted": "magenta"}


def runs_table(runs: list[Any], stages: tuple[str, ...]) -> None:
    from rich.table import Table

    table = Table("run", "model", "created", *stages, "samples")
    for r in runs:
        table.add_row(r.name, r.model, r.created[:19].replace("T", " "),
                      *(f"[{STATE_COLOUR.get(r.stages[s], 'dim')}]{r.stages[s]}[/]"
                        for s in stages), str(r.samples))
    console().print(table)


def presets_table(presets: Any) -> None:
    from rich.table import Table

    table = Table(caption="T / top-k / top-p; '-' = off", caption_justify="left")
    table.add_column("preset", no_wrap=True)
    for name in ("T_train", "T_eval", "base"):
        table.add_column(name, no_wrap=True)
    table.add_column("source")
    for p in presets.values():
        table.add_row(p.name, p.train.short(), p.eval.short(), p.base.short(), p.description)
    console().print(table)


def diagnosis(d: Any) -> None:
    c = console()
    width = max(len(label) for label, _ in d.rows)
    for label, text in d.rows:
        c.print(f"[bold]{label.ljust(width)}[/]  {text}", highlight=False, soft_wrap=True)
    if d.missing:
        c.print("[yellow]missing for the best backend on this machine:[/]")
        for line in d.missing:
            c.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    else:
        c.print("[green]nothing missing for the best backend on this machine[/]")
