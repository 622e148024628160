"""The ``ssd-local`` command: a dispatcher. Each subcommand's options are generated from
its stage config (``options``), its work is the core's, its output is ``render``'s.

    ssd-local sample smollm2-135m --prompts builtin --limit 4 --run r1
    ssd-local runs
    ssd-local presets
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..config import (STAGES, CompareConfig, EvalConfig, ExportConfig, HandoffConfig,
                      LensConfig, PushConfig, SampleConfig, ServeConfig, TrainConfig)
from ..errors import Cancelled, UserError
from . import commands as c
from .options import SHARED, add_config_options

MODEL_HELP = "smollm2-135m, a .gguf file, an HF folder, or a hub id"
LENS_HELP = (
    "Score the same texts under the run's base and tuned model and report, per token, "
    "under (T, top-k, top-p) applied in the paper's order (default: the run's T_train "
    "decoding): the kept mass inside the truncation set, the tail mass cut away, the "
    "entropy of the tempered truncated distribution and how many tokens survive. "
    "Positions are labelled on the BASE model's tempered distribution, so both models are "
    "compared at the same positions: lock = the top token has probability >= "
    "--lock-threshold; fork = not a lock, and at least two tokens inside the truncation "
    "set have >= --fork-threshold each; neither = the rest. SSD should lower the tail mass at locks and keep the head entropy at forks. "
    "Writes RUN/lens/lens-SOURCE.json (summary and per-token table) and a PNG.")


def _stage_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample the model's own answers (SSD stage 1)",
                       description="Sample one (or N) answers per coding prompt at T_train with "
                                   "top-k/top-p truncation; rerun to resume.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--run", help="run name (default: the model's name); reuse it to resume")
    add_config_options(p, SampleConfig)
    p.set_defaults(func=c.cmd_sample)

    p = sub.add_parser("train", help="fine-tune on a run's samples, then fuse (SSD stage 2)",
                       description="LoRA (or --full) fine-tuning with plain cross-entropy on "
                                   "the run's own samples; rerun to resume from the last "
                                   "checkpoint. Under torchrun it trains with DDP (or --fsdp).")
    p.add_argument("run", help="the run to train (see `ssd-local runs`)")
    p.add_argument("--no-fuse", action="store_true", help="skip merging into RUN/merged")
    add_config_options(p, TrainConfig)
    p.set_defaults(func=c.cmd_train)

    p = sub.add_parser("fuse", help="merge a run's trained adapter into RUN/merged")
    p.add_argument("run")
    p.set_defaults(func=c.cmd_fuse)

    p = sub.add_parser("export", help="convert RUN/merged to GGUF and quantize (llama.cpp); "
                                      "--to ollama|lmstudio hands the GGUF over")
    p.add_argument("run")
    add_config_options(p, ExportConfig)
    add_config_options(p, HandoffConfig)
    p.set_defaults(func=c.cmd_export)

    p = sub.add_parser("push", help="upload a run's GGUFs and a model card to the Hugging "
                                    "Face Hub",
                       description="Create (or reuse) the model repo ORG/NAME and upload the "
                                   "run's GGUFs, optionally its merged transformers folder, "
                                   "and a model card (recipe, decoding, compare results) in "
                                   "one commit. HF_TOKEN or `hf auth login` as usual.")
    p.add_argument("run")
    p.add_argument("repo_id", metavar="ORG/NAME", help="the Hub model repo")
    add_config_options(p, PushConfig)
    p.set_defaults(func=c.cmd_push)

    p = sub.add_parser("serve", help="OpenAI-compatible endpoint for a run or GGUF (llama.cpp)")
    p.add_argument("target", help="a run name, a .gguf file, or smollm2-135m")
    add_config_options(p, ServeConfig)
    p.set_defaults(func=c.cmd_serve)

    p = sub.add_parser("distill", help="the whole recipe: sample, train, fuse, export",
                       description="sample -> train -> fuse -> export/quantize in one run; "
                                   "rerun to resume at the first unfinished stage.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--run", help="run name (default: the model's name)")
    p.add_argument("--stop-after", choices=STAGES)
    add_config_options(p, SampleConfig)
    add_config_options(p, TrainConfig, skip=SHARED)
    add_config_options(p, TrainConfig, prefix="train-", only=SHARED)
    add_config_options(p, ExportConfig)
    p.set_defaults(func=c.cmd_distill)


def _eval_commands(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=c.cmd_eval)

    p = sub.add_parser("compare", help="base vs distilled over a temperature sweep",
                       description="Evaluate the run's base model and its tuned model on the "
                                   "same problems at each temperature; report each one's best "
                                   "setting and the difference with a bootstrap interval; save "
                                   "a plot in the run.")
    p.add_argument("run")
    add_config_options(p, CompareConfig)
    p.set_defaults(func=c.cmd_compare)

    p = sub.add_parser("lens", help="per token: tail mass at locks, head entropy at forks, "
                                    "base vs tuned",
                       description=LENS_HELP)
    p.add_argument("run")
    add_config_options(p, LensConfig)
    p.set_defaults(func=c.cmd_lens)


def _info_commands(sub: argparse._SubParsersAction) -> None:
    for name, func, help in (
            ("models", c.cmd_models, "what `serve` can serve: runs with GGUFs, the default"),
            ("runs", c.cmd_runs, "list runs and their stage states"),
            ("presets", c.cmd_presets, "the paper's decoding presets"),
            ("doctor", c.cmd_doctor, "hardware, memory, installed backends, and what is "
                                     "missing for the best backend here"),
            ("tui", c.cmd_tui, "the terminal UI (also what bare `ssd-local` opens)")):
        sub.add_parser(name, help=help).set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd-local",
        description="Simple self-distillation for code models, on your own machine.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _stage_commands(sub)
    _eval_commands(sub)
    _info_commands(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    import warnings

    # deprecation chatter from the libraries is for their authors, not for our users
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if sys.stdin.isatty() and sys.stdout.isatty():
            return c.cmd_tui(args)
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


__all__ = ["build_parser", "main"]
