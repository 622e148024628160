"""One function per command: build the stage's config from the options, call the core with
the event renderer, print the typed result. Nothing here decides anything the core does."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from ..config import (CompareConfig, EvalConfig, ExportConfig, HandoffConfig, LensConfig,
                      PushConfig, SampleConfig, ServeConfig, TrainConfig)
from ..errors import UserError
from .options import SHARED, config_from_args


class cancel_on_sigint:
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


def cmd_sample(args: argparse.Namespace) -> int:
    from ..app.sampling import sample
    from . import render as r

    cfg = config_from_args(SampleConfig, args)
    with r.EventRenderer() as on_event, cancel_on_sigint(on_event) as cancel:
        run, summary = sample(args.model, cfg, args.run, on_event=on_event, cancel=cancel)
    r.sample_summary(run, summary)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..app.training import train
    from . import render as r

    cfg = config_from_args(TrainConfig, args)
    with r.EventRenderer() as on_event, cancel_on_sigint(on_event) as cancel:
        result = train(args.run, cfg, on_event=on_event, cancel=cancel,
                       fuse_after=not args.no_fuse)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, only the main process
        r.train_summary(args.run, result)
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from ..app.training import fuse
    from . import render as r

    with r.EventRenderer() as on_event:
        out = fuse(args.run, on_event=on_event)
    r.console().print(f"[bold green]fused[/] into {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..app.export import export
    from . import render as r

    if args.to:
        return cmd_handoff(args)
    with r.EventRenderer() as on_event:
        result = export(args.run, config_from_args(ExportConfig, args), on_event=on_event)
    r.export_summary(args.run, result)
    return 0


def cmd_handoff(args: argparse.Namespace) -> int:
    from ..app.handoff import export_to
    from . import render as r
    from .handoff_view import handoff_summary

    with r.EventRenderer() as on_event:
        result = export_to(args.run, config_from_args(ExportConfig, args),
                           config_from_args(HandoffConfig, args), on_event=on_event)
    handoff_summary(result)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..app.publish import push
    from . import render as r
    from .handoff_view import push_summary

    with r.EventRenderer() as on_event:
        result = push(args.run, args.repo_id, config_from_args(PushConfig, args),
                      on_event=on_event)
    push_summary(result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..app.serving import ServerHandle, check_bind
    from . import render as r

    cfg = config_from_args(ServeConfig, args)
    handle = ServerHandle(args.target, cfg)
    check_bind(cfg)
    r.serving(handle)
    handle.run_forever(on_ready=lambda: r.serving_ready(handle))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..app.serving import servable
    from . import render as r

    r.models_table(servable())
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..app.pipeline import distill
    from . import render as r

    s_cfg = config_from_args(SampleConfig, args)
    t_cfg = config_from_args(TrainConfig, args, SHARED, "train-")
    e_cfg = config_from_args(ExportConfig, args)
    with r.EventRenderer() as on_event, cancel_on_sigint(on_event) as cancel:
        out = distill(args.model, s_cfg, t_cfg, e_cfg, args.run, stop_after=args.stop_after,
                      on_event=on_event, cancel=cancel)
    r.distill_summary(out, ServeConfig().base_url)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ..app.evaluation import evaluate as ev
    from . import render as r

    cfg = config_from_args(EvalConfig, args)
    if bool(args.problems) != bool(args.completions):
        raise UserError("--problems and --completions go together: pass both files")
    if args.problems and args.target:
        raise UserError("pass either a model/run or --problems/--completions, not both")
    if not args.problems and not args.target and not cfg.endpoint:
        raise UserError("name what to evaluate: a run, a model (e.g. smollm2-135m), or "
                        "--endpoint URL; or score files with --problems/--completions")
    with r.EventRenderer(quiet=args.json) as on_event, cancel_on_sigint(on_event) as cancel:
        if args.problems:
            out = Path(args.out).expanduser() if args.out else None
            result = ev.score_files(Path(args.problems).expanduser(),
                                    Path(args.completions).expanduser(), cfg, out=out,
                                    on_event=on_event, cancel=cancel)
        else:
            result = ev.evaluate(args.target or "-", cfg, on_event=on_event, cancel=cancel)
    if args.json:
        print(json.dumps(result.summary | {"folder": str(result.folder)}, ensure_ascii=False))
    else:
        r.eval_summary(result)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..app.evaluation.compare import compare
    from . import render as r
    from .compare_view import compare_table

    cfg = config_from_args(CompareConfig, args)
    with r.EventRenderer() as on_event, cancel_on_sigint(on_event) as cancel:
        result = compare(args.run, cfg, on_event=on_event, cancel=cancel)
    compare_table(result)
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from ..app.lens.report import run_lens
    from . import render as r

    cfg = config_from_args(LensConfig, args)
    with r.EventRenderer() as on_event, cancel_on_sigint(on_event) as cancel:
        report = run_lens(args.run, cfg, on_event=on_event, cancel=cancel)
    r.lens_table(report)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..app.runs import list_runs, runs_root
    from ..config import STAGES
    from . import render as r

    runs = list_runs()
    if not runs:
        r.console().print(f"no runs yet under {runs_root()}; start one with `ssd-local sample`")
        return 0
    r.runs_table(runs, STAGES)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import PRESETS
    from . import render as r

    r.presets_table(PRESETS)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..app.doctor import diagnose
    from . import render as r

    r.diagnosis(diagnose())
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from ..tui import main as tui_main  # textual is imported here only

    return tui_main()
