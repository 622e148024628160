"""The ``ssd-local`` command. Thin: parse, call ``app``, render events with rich.

    ssd-local sample smollm2-135m --prompts builtin --limit 4 --run r1
    ssd-local runs
    ssd-local presets
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import typing
from dataclasses import MISSING, fields
from typing import Any, Callable

from .app.config import PRESETS, ExportConfig, SampleConfig, ServeConfig, TrainConfig
from .app.errors import Cancelled, UserError


# -- options generated from the config dataclasses ----------------------------------------------
def _base_type(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                       only: tuple[str, ...] | None = None) -> None:
    """One ``--flag`` per config field; defaults and help come from the field itself.
    ``prefix`` renames flags and destinations (``distill`` combines several stages)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        if only is not None and f.name not in only:
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        tp = _base_type(hints[f.name])
        default = None if f.default is MISSING else f.default
        shown = "" if default is None else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": default,
                                  "help": meta.get("help", "") + shown}
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


# options that both sampling and training have: training's get a train- prefix in distill
SHARED = ("seed", "batch_size", "backend")


# -- commands ----------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from .app.sampling import sample
    from .ui_cli import EventRenderer, console

    cfg = config_from_args(SampleConfig, args)
    with EventRenderer() as render, _cancel_on_sigint(render) as cancel:
        run, summary = sample(args.model, cfg, args.run, on_event=render, cancel=cancel)
    console().print(f"[bold green]sampled[/] {summary.samples} samples in run "
                    f"[bold]{run.name}[/]: {run.samples_path}")
    console().print(f"  degenerate: {summary.empty} empty, {summary.stub} one-line; "
                    f"{summary.looped} looped; {summary.length_capped} hit --max-new-tokens; "
                    f"{summary.with_code} with a code block")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .app.training import train
    from .ui_cli import EventRenderer, console

    cfg = config_from_args(TrainConfig, args)
    with EventRenderer() as render, _cancel_on_sigint(render) as cancel:
        summary = train(args.run, cfg, on_event=render, cancel=cancel,
                        fuse_after=not args.no_fuse)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, only the main process
        val = summary.get("val_loss")
        console().print(f"[bold green]trained[/] run [bold]{args.run}[/]: {summary['steps']} "
                        f"steps, train loss {summary['train_loss']:.4f}"
                        + (f", val loss {val:.4f}" if val is not None else ""))
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .app.training import fuse
    from .ui_cli import EventRenderer, console

    with EventRenderer() as render:
        out = fuse(args.run, on_event=render)
    console().print(f"[bold green]fused[/] into {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .app.export import export
    from .ui_cli import EventRenderer, console

    with EventRenderer() as render:
        ggufs = export(args.run, config_from_args(ExportConfig, args), on_event=render)
    for q, a in ggufs.items():
        console().print(f"[bold green]{q}[/] {a['bytes'] / 2**20:.1f} MB  sha256 "
                        f"{a['sha256'][:16]}")
    console().print(f"serve it: [bold]ssd-local serve {args.run}[/]")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app.serving import check_bind, client_snippets, plan, serve
    from .ui_cli import console

    cfg = config_from_args(ServeConfig, args)
    p = plan(args.target, cfg.quant)
    check_bind(cfg)
    snippets = client_snippets(p, cfg)
    c = console()
    c.print(f"serving [bold]{p.model_id}[/] ({p.path.name}) at [bold]{snippets['base_url']}[/]"
            f"  default decoding {p.decoding.describe()}")
    for title, text in list(snippets.items())[1:]:
        c.print(f"[dim]-- {title} --[/]")
        c.print(text, markup=False, highlight=False, soft_wrap=True)
    c.print("[dim]Ctrl-C stops the server.[/]")
    serve(p, cfg)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .app.serving import servable
    from .ui_cli import console

    table = Table("name", "kind", "GGUFs")
    for name, kind, detail in servable():
        table.add_row(name, kind, detail)
    console().print(table)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .app.pipeline import distill
    from .ui_cli import EventRenderer, console

    s_cfg = config_from_args(SampleConfig, args)
    t_cfg = config_from_args(TrainConfig, args, SHARED, "train-")
    e_cfg = config_from_args(ExportConfig, args)
    with EventRenderer() as render, _cancel_on_sigint(render) as cancel:
        out = distill(args.model, s_cfg, t_cfg, e_cfg, args.run, stop_after=args.stop_after,
                      on_event=render, cancel=cancel)
    c = console()
    s = out["sample"]
    c.print(f"[bold green]distilled[/] run [bold]{out['run']}[/]")
    c.print(f"  samples: {s['samples']} ({s['empty']} empty, {s['stub']} one-line, "
            f"{s['looped']} looped, {s['length_capped']} hit the length cap)")
    t = out.get("train") or {}
    if t:
        val = t.get("val_loss")
        c.print(f"  training: {t.get('steps')} steps, final train loss "
                f"{t.get('train_loss', float('nan')):.4f}"
                + (f", val loss {val:.4f}" if val is not None else ""))
    for rel, size in (out.get("ggufs") or {}).items():
        c.print(f"  {rel}: {size / 2**20:.1f} MB")
    d = out.get("recommended_decoding")
    if d:
        c.print(f"  recommended decoding (T_eval): T={d['temperature']:g} top-k={d['top_k']} "
                f"top-p={d['top_p']:g}")
    if out.get("ggufs"):
        c.print(f"serve it:  [bold]ssd-local serve {out['run']}[/]   (then point an OpenAI "
                "client at http://127.0.0.1:8080/v1)")
    return 0


def _eval_config(args: argparse.Namespace) -> Any:
    from .app.evaluation.evaluate import EvalConfig

    return config_from_args(EvalConfig, args)


def _print_protections(c: Any, prot: dict[str, str]) -> None:
    for key, text in prot.items():
        style = "red" if "NOT" in text else "dim"
        c.print(f"[{style}]sandbox {key}: {text}[/]")


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rich.table import Table

    from .app.evaluation import evaluate as ev
    from .ui_cli import EventRenderer, console

    cfg = _eval_config(args)
    if bool(args.problems) != bool(args.completions):
        raise UserError("--problems and --completions go together: pass both files")
    with EventRenderer(quiet=args.json) as render, _cancel_on_sigint(render) as cancel:
        if args.problems:
            if args.target:
                raise UserError("pass either a model/run or --problems/--completions, not both")
            out = Path(args.out).expanduser() if args.out else None
            result = ev.score_files(Path(args.problems).expanduser(),
                                    Path(args.completions).expanduser(), cfg, out=out,
                                    on_event=render, cancel=cancel)
        else:
            if not args.target and not cfg.endpoint:
                raise UserError("name what to evaluate: a run, a model (e.g. smollm2-135m), or "
                                "--endpoint URL; or score files with --problems/--completions")
            result = ev.evaluate(args.target or "-", cfg, on_event=render, cancel=cancel)
    s = result.summary
    if args.json:
        print(json.dumps(s | {"folder": str(result.folder)}, ensure_ascii=False))
        return 0
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
    _print_protections(c, s.get("sandbox", {}))
    c.print(f"per-sample results: {result.folder / 'results.jsonl'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .app.evaluation.compare import compare, parse_sweep
    from .ui_cli import EventRenderer, console

    cfg = _eval_config(args)
    temps = parse_sweep(args.temperatures)
    with EventRenderer() as render, _cancel_on_sigint(render) as cancel:
        r = compare(args.run, cfg, temps, on_event=render, cancel=cancel)
    c = console()
    ks = cfg.ks()
    table = Table(title=f"{r['run']} on {r['benchmark']}: {r['problems']} problems x "
                        f"{r['samples_per_problem']} samples")
    table.add_column("T", justify="right")
    for k in ks:
        table.add_column(f"base pass@{k}", justify="right")
        table.add_column(f"tuned pass@{k}", justify="right")
    for row in r["rows"]:
        cells = [f"{row['temperature']:g}"]
        for k in ks:
            for side in ("base", "tuned"):
                v = row.get(f"{side} pass@{k}")
                best = r[f"{side}_best"]["temperature"] == row["temperature"] and k == 1
                text = "-" if v is None else f"{100 * v:.1f}%"
                cells.append(f"[bold]{text}*[/]" if best else text)
        table.add_row(*cells)
    c.print(table)
    c.print("[dim]* best setting of each model (pass@1)[/]")
    c.print(f"[bold]{r['verdict']}[/]")
    c.print(f"plot: {r['plot']}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .app.runs import STAGES, list_runs, runs_root
    from .ui_cli import console

    runs = list_runs()
    if not runs:
        console().print(f"no runs yet under {runs_root()}; start one with `ssd-local sample`")
        return 0
    table = Table("run", "model", "created", *STAGES, "samples")
    colour = {"done": "green", "running": "yellow", "cancelled": "magenta", "failed": "red",
              "interrupted": "magenta"}
    for r in runs:
        table.add_row(r.name, r.model, r.created[:19].replace("T", " "),
                      *(f"[{colour.get(r.stages[s], 'dim')}]{r.stages[s]}[/]" for s in STAGES),
                      str(r.samples))
    console().print(table)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .ui_cli import console

    def short(d: Any) -> str:
        return f"{d.temperature:g}/{d.top_k or '-'}/{d.top_p:g}"

    table = Table(caption="T / top-k / top-p; '-' = off", caption_justify="left")
    table.add_column("preset", no_wrap=True)
    for name in ("T_train", "T_eval", "base"):
        table.add_column(name, no_wrap=True)
    table.add_column("source")
    for p in PRESETS.values():
        table.add_row(p.name, short(p.train), short(p.eval), short(p.base), p.description)
    console().print(table)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .app.doctor import diagnose
    from .ui_cli import console

    d = diagnose()
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
    return 0


class _cancel_on_sigint:
    """First Ctrl-C asks the work to stop at a safe point; a second one aborts at once."""

    def __init__(self, render: Any):
        self.render = render
        self.event = threading.Event()

    def __enter__(self) -> threading.Event:
        def handler(signum: int, frame: Any) -> None:
            if self.event.is_set():
                raise KeyboardInterrupt
            self.event.set()
            self.render.note("stopping at a safe point; the run stays resumable "
                             "(Ctrl-C again to abort now)")

        self.old = signal.signal(signal.SIGINT, handler)
        return self.event

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self.old)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd-local",
        description="Simple self-distillation for code models, on your own machine.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sample", help="sample the model's own answers (SSD stage 1)",
                       description="Sample one (or N) answers per coding prompt at T_train with "
                                   "top-k/top-p truncation; rerun to resume.")
    p.add_argument("model", help="smollm2-135m, a .gguf file, an HF folder, or a hub id")
    p.add_argument("--run", help="run name (default: the model's name); reuse it to resume")
    add_config_options(p, SampleConfig)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train", help="fine-tune on a run's samples, then fuse (SSD stage 2)",
                       description="LoRA (or --full) fine-tuning with plain cross-entropy on "
                                   "the run's own samples; rerun to resume from the last "
                                   "checkpoint. Under torchrun it trains with DDP (or --fsdp).")
    p.add_argument("run", help="the run to train (see `ssd-local runs`)")
    p.add_argument("--no-fuse", action="store_true", help="skip merging into RUN/merged")
    add_config_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fuse", help="merge a run's trained adapter into RUN/merged")
    p.add_argument("run")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("export", help="convert RUN/merged to GGUF and quantize (llama.cpp)")
    p.add_argument("run")
    add_config_options(p, ExportConfig)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="OpenAI-compatible endpoint for a run or GGUF (llama.cpp)")
    p.add_argument("target", help="a run name, a .gguf file, or smollm2-135m")
    add_config_options(p, ServeConfig)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="what `serve` can serve: runs with GGUFs, the default")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("distill", help="the whole recipe: sample, train, fuse, export",
                       description="sample -> train -> fuse -> export/quantize in one run; "
                                   "rerun to resume at the first unfinished stage.")
    p.add_argument("model", help="smollm2-135m, a .gguf file, an HF folder, or a hub id")
    p.add_argument("--run", help="run name (default: the model's name)")
    p.add_argument("--stop-after", choices=("sample", "train", "fuse", "export"))
    add_config_options(p, SampleConfig)
    add_config_options(p, TrainConfig, only=tuple(
        f.name for f in fields(TrainConfig) if f.name not in SHARED))
    add_config_options(p, TrainConfig, prefix="train-", only=SHARED)
    add_config_options(p, ExportConfig)
    p.set_defaults(func=cmd_distill)

    from .app.evaluation.evaluate import EvalConfig

    p = sub.add_parser("eval", help="pass@k on a benchmark, in a sandbox (run, model or files)",
                       description="Evaluate a run's tuned model (at its T_eval), a model (at "
                                   "its own recommended decoding) or an endpoint on a "
                                   "benchmark; or score completions made elsewhere with "
                                   "--problems/--completions. Samples run in a sandbox.")
    p.add_argument("target", nargs="?", help="a run, smollm2-135m, a .gguf file, an HF "
                                             "folder or a hub id")
    p.add_argument("--problems", metavar="FILE", help="problems JSONL (HumanEval or "
                                                      "stdin/stdout shape)")
    p.add_argument("--completions", metavar="FILE", help="completions JSONL (task_id, "
                                                         "completion)")
    p.add_argument("--out", metavar="DIR", help="with --problems: write results.jsonl and "
                                                "summary.json here (default: a folder under "
                                                "$SSD_LOCAL_HOME/evals)")
    p.add_argument("--json", action="store_true", help="print one JSON object (pass@k and "
                                                       "details) on stdout")
    add_config_options(p, EvalConfig)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="base vs distilled over a temperature sweep",
                       description="Evaluate the run's base model and its tuned model on the "
                                   "same problems at each temperature; report each one's best "
                                   "setting and the difference with a bootstrap interval; save "
                                   "a plot in the run.")
    p.add_argument("run")
    p.add_argument("--temperatures", default="0.2,0.4,0.6,0.8,1.0,1.2,1.4", metavar="LIST",
                   help="the sweep (default: 0.2,0.4,...,1.4)")
    add_config_options(p, EvalConfig)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("runs", help="list runs and their stage states")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("presets", help="the paper's decoding presets")
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("doctor", help="hardware, memory, installed backends, and what is "
                                      "missing for the best backend here")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("tui", help="the terminal UI (also what bare `ssd-local` opens)")
    p.set_defaults(func=cmd_tui)
    return parser


def cmd_tui(args: argparse.Namespace) -> int:
    from .tui import main as tui_main  # textual is imported here only

    return tui_main()


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    import warnings

    # deprecation chatter from the libraries is for their authors, not for our users
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if sys.stdin.isatty() and sys.stdout.isatty():
            return cmd_tui(args)
        parser.print_help()  # piped or scripted: no UI to draw
        return 0
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"cancelled: {exc}; rerun the same command to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("aborted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
