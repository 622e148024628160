"""Training throughput: `ssd-local train` against a minimal hand-written peft loop on the
same model, data and batch, side by side in one command (each in a fresh child process,
so peak memory is measured cleanly).

    .venv/bin/python bench/training.py                # SmolLM2-135M, CPU fp32
    .venv/bin/python bench/training.py --steps 8 --prompts 64

Data: the model's own samples of builtin prompts (sampled once with llama.cpp and cached).
Both sides: LoRA r=16 on all linear layers, AdamW, batch 4, effective batch 8, same steps.
The baseline pads each batch of 4 consecutive samples to its longest; ssd-local runs with
--batching none, group and pack. Prints trained tokens/s (prompt + response tokens, no
padding), peak RSS, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss(stop: threading.Event, out: list[float]) -> None:
    import psutil

    p = psutil.Process()
    while not stop.is_set():
        out[0] = max(out[0], p.memory_info().rss / 2**20)
        time.sleep(0.05)


def ours(home: str, mode: str, steps: int, q: mp.Queue) -> None:
    os.environ["SSD_LOCAL_HOME"] = home
    from ssd_local.config import TrainConfig
    from ssd_local.app.runs import runs_root
    from ssd_local.app.training import train

    name = f"bench-{mode}"
    shutil.rmtree(runs_root() / name, ignore_errors=True)
    shutil.copytree(runs_root() / "bench", runs_root() / name,
                    ignore=shutil.ignore_patterns(".lock"))
    stop, peak = threading.Event(), [0.0]
    threading.Thread(target=_peak_rss, args=(stop, peak), daemon=True).start()
    cfg = TrainConfig(max_steps=steps, batch_size=4, effective_batch=8, batching=mode,
                      val_fraction=0.0, save_every=10_000)
    rows = []
    from ssd_local import events

    def on_event(e):
        if isinstance(e, events.Progress) and e.stage == "train":
            rows.append(e.metrics)

    train(name, cfg, on_event=on_event, fuse_after=False)
    stop.set()
    q.put((rows[-1]["tokens_per_s"], peak[0]))


def baseline(home: str, steps: int, q: mp.Queue) -> None:
    """What a user would write by hand with transformers + peft."""
    os.environ["SSD_LOCAL_HOME"] = home
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssd_local.app import models
    from ssd_local.app.runs import runs_root

    folder = models.ensure_hf_folder(models.resolve("smollm2-135m"))
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    samples = [json.loads(x) for x in
               (runs_root() / "bench" / "samples.jsonl").read_text().splitlines()]
    data = []
    for s in samples:
        p = tok(s["prompt_text"], add_special_tokens=False)["input_ids"]
        c = tok(s["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        data.append((p + c, [-100] * len(p) + c))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                            betas=(0.9, 0.95), weight_decay=0.1)
    stop, peak = threading.Event(), [0.0]
    threading.Thread(target=_peak_rss, args=(stop, peak), daemon=True).start()
    model.train()
    t0, tokens, i = time.monotonic(), 0, 0
    for _ in range(steps):
        for _ in range(2):  # 2 x 4 = effective batch 8
            batch = [data[(i + j) % len(data)] for j in range(4)]
            i += 4
            width = max(len(x) for x, _ in batch)
            ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in batch])
            lab = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss / 2
            loss.backward()
            tokens += sum(len(x) for x, _ in batch)
        opt.step()
        opt.zero_grad()
    dt = time.monotonic() - t0
    stop.set()
    q.put((tokens / dt, peak[0]))


def in_child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--home", default=os.path.join(tempfile.gettempdir(), "ssd-local-bench"))
    a = ap.parse_args()
    os.environ["SSD_LOCAL_HOME"] = a.home
    from ssd_local.config import SampleConfig
    from ssd_local.app.sampling import sample

    # the model's own answers, varied lengths: T=1.0 as in the generic preset
    sample("smollm2-135m", SampleConfig(limit=a.prompts, max_new_tokens=a.max_new_tokens),
           "bench")
    print(f"SmolLM2-135M, LoRA r=16 all-linear, CPU fp32, {a.steps} steps x 8 examples, "
          f"batch 4", flush=True)
    base_tps, base_mem = in_child(baseline, a.home, a.steps)
    print(f"  hand-written peft loop      {base_tps:7.1f} tok/s  peak RSS {base_mem:6.0f} MB",
          flush=True)
    for mode in ("none", "group", "pack"):
        tps, mem = in_child(ours, a.home, mode, a.steps)
        print(f"  ssd-local train --batching {mode:5s} {tps:7.1f} tok/s  peak RSS {mem:6.0f} MB"
              f"  ratio {tps / base_tps:.2f}x", flush=True)


if __name__ == "__main__":
    main()
