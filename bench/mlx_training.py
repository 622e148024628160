"""Trained tokens/s: ssd-local's mlx backend against `mlx_lm lora` run directly, on the same
model, the same examples and the same LoRA/optimizer settings, each in a fresh process.

    .venv/bin/python bench/mlx_training.py [--steps 2] [--batch-size 2] [--max-new-tokens 48]

Data: SmolLM2-135M's own answers to the first steps x batch-size builtin prompts (sampled
with llama.cpp, the fast engine here). ssd-local trains on them from its run; mlx-lm gets
the same conversations as a `messages` JSONL with --mask-prompt. Both sides: LoRA rank 16,
scale 2 (alpha 32 / r 16), dropout 0.05 on every linear layer of every block, AdamW, one
example batch per step, no validation, the model as a float32 transformers folder.

"Trained tokens" are response tokens, the tokens that carry the loss: the figure mlx-lm's
trainer reports with --mask-prompt (tokens / training time, validation excluded). Both
numbers come from the same trainer loop (ssd-local runs mlx-lm's train() with its own
loss and batches), read through a TrainingCallback on the mlx-lm side and from
RUN/train_metrics.jsonl on ours. On Linux CPU (MLX's CPU build) this is a parity check of
the two code paths, not a speed figure: only Apple silicon gives MLX speeds that matter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{r.stderr[-3000:]}")
    return r


def mlx_lm_side(argv: list[str]) -> None:
    """Child process: `mlx_lm lora` through its own CLI entry point, with a callback
    attached to observe its reports (it draws them, we need the numbers)."""
    from mlx_lm import lora
    from mlx_lm.tuner.callbacks import TrainingCallback

    reports: list[dict] = []

    class Observe(TrainingCallback):
        def on_train_loss_report(self, info: dict) -> None:
            reports.append({k: float(v) for k, v in info.items()})

    lora.get_reporting_callbacks = lambda *a, **k: Observe()
    sys.argv = ["mlx_lm.lora", *argv]
    with open(os.devnull, "w") as quiet:
        out, sys.stdout = sys.stdout, quiet
        try:
            lora.main()
        finally:
            sys.stdout = out
    print(json.dumps(reports[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--mlx-lm-side", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.mlx_lm_side is not None:
        return mlx_lm_side(a.mlx_lm_side)

    work = Path(tempfile.mkdtemp(prefix="ssd-bench-mlx-"))
    env = dict(os.environ, SSD_LOCAL_HOME=str(work / "home"), HF_HUB_OFFLINE="1")
    n = a.steps * a.batch_size
    _run("-m", "ssd_local.cli", "sample", "smollm2-135m", "--limit", str(n),
         "--max-new-tokens", str(a.max_new_tokens), "--run", "bench", env=env)
    run_dir = work / "home" / "runs" / "bench"
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    system = json.loads((run_dir / "manifest.json").read_text())["config"]["sample"][
        "system_prompt"]
    data = work / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": system}, {"role": "user", "content": s["prompt"]},
        {"role": "assistant", "content": s["completion"]}]}) + "\n" for s in samples))
    (work / "lora.yaml").write_text(json.dumps({  # YAML is a superset of JSON
        "lora_parameters": {"rank": 16, "scale": 2.0, "dropout": 0.05},
        "optimizer": "adamw", "optimizer_config": {"adamw": {"betas": [0.9, 0.95],
                                                              "weight_decay": 0.1}}}))

    # ours: a fresh process, the model converted to a transformers folder by sampling above
    t = time.monotonic()
    _run("-m", "ssd_local.cli", "train", "bench", "--backend", "mlx", "--max-steps",
         str(a.steps), "--batch-size", str(a.batch_size), "--effective-batch",
         str(a.batch_size), "--val-fraction", "0", "--no-fuse", env=env)
    ours_wall = time.monotonic() - t
    rows = [json.loads(x) for x in (run_dir / "train_metrics.jsonl").read_text().splitlines()]
    ours = rows[-1]["trained_tokens_per_s"]

    folder = next((work / "home" / "models").glob("*-hf"))
    t = time.monotonic()
    r = _run(__file__, "--mlx-lm-side", "--model", str(folder), "--train", "--data", str(data),
             "--mask-prompt", "--optimizer", "adamw", "--batch-size", str(a.batch_size),
             "--iters", str(a.steps),
             "--steps-per-report", str(a.steps), "--steps-per-eval", "1000000",
             "--num-layers", "-1", "--learning-rate", "2e-4", "--save-every", "1000000",
             "--adapter-path", str(work / "mlx-lm-adapter"), "-c", str(work / "lora.yaml"),
             env=env)
    theirs_wall = time.monotonic() - t
    theirs = json.loads(r.stdout.strip().splitlines()[-1])["tokens_per_second"]

    print(f"SmolLM2-135M (fp32), LoRA r16 on all linear layers, {a.steps} steps x "
          f"{a.batch_size} examples, answers up to {a.max_new_tokens} tokens")
    print(f"{'trainer':<28}{'trained tok/s':>14}{'process wall s':>16}")
    print(f"{'mlx_lm lora (direct)':<28}{theirs:>14.3f}{theirs_wall:>16.1f}")
    print(f"{'ssd-local train --backend mlx':<28}{ours:>14.3f}{ours_wall:>16.1f}")
    print(f"ratio (ours / mlx_lm lora): {ours / theirs:.2f}x")
    import mlx.core as mx

    if not mx.metal.is_available():
        print("MLX CPU build: this checks parity of the two code paths; speeds that matter "
              "come from Apple silicon.")


if __name__ == "__main__":
    main()
