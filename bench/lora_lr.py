"""The LoRA learning-rate measurement behind the default (``LR_LORA`` in app/config.py).

    .venv/bin/python bench/lora_lr.py

Trains SmolLM2-135M with LoRA r=16 on its own samples of builtin prompts for a fixed
number of steps at several peak learning rates (same data, seed, schedule) and prints the
held-out validation loss after training for each, and the full fine-tune rate for contrast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=120)
    ap.add_argument("--lrs", default="5e-5,2e-4,1e-3")
    ap.add_argument("--home", default=os.path.join(tempfile.gettempdir(), "ssd-local-bench"))
    a = ap.parse_args()
    os.environ["SSD_LOCAL_HOME"] = a.home
    from ssd_local.config import SampleConfig, TrainConfig
    from ssd_local.app.runs import runs_root
    from ssd_local.app.sampling import sample
    from ssd_local.app.training import train

    sample("smollm2-135m", SampleConfig(limit=a.prompts, max_new_tokens=160), "lr-data")
    print(f"SmolLM2-135M LoRA r=16, {a.steps} steps x 8 examples, 20% of prompts held out")
    for lr in [float(x) for x in a.lrs.split(",")]:
        name = f"lr-{lr:g}"
        shutil.rmtree(runs_root() / name, ignore_errors=True)
        shutil.copytree(runs_root() / "lr-data", runs_root() / name,
                        ignore=shutil.ignore_patterns(".lock"))
        cfg = TrainConfig(lr=lr, max_steps=a.steps, batch_size=4, effective_batch=8,
                          val_fraction=0.2, eval_every=a.steps, save_every=10_000)
        out = train(name, cfg, fuse_after=False)
        print(f"  lr {lr:8.0e}: train loss {out.train_loss:.4f}  val loss "
              f"{out.val_loss:.4f}", flush=True)
        shutil.rmtree(runs_root() / name, ignore_errors=True)


if __name__ == "__main__":
    main()
