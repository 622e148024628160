"""Training speed and memory: `ssd-local train` against a minimal hand-written peft loop on
the same model, data and batches, side by side in one command (each in a fresh child
process, so peak memory is measured cleanly).

    .venv/bin/python bench/training.py                # SmolLM2-135M, CPU fp32
    .venv/bin/python bench/training.py --steps 6 --prompts 64 --batching none,group,pack

Data: the model's own samples of builtin prompts (sampled once with llama.cpp and cached).
Both sides: LoRA r=16 on all linear layers, AdamW, effective batch 8, the same steps.
The peft loop pads each batch of 4 consecutive samples to its longest and takes
transformers' own loss (logits at every position), once as written and once with
``gradient_checkpointing_enable()``. ssd-local runs ``--batching group`` with the memory
plan's automatic settings, then with checkpointing forced off and on at micro-batch 4
(``--batching`` adds the other batching modes; ``--compact-memory on|off`` overrides
the plan's choice on every row of ours).

Per row: trained tokens/s (prompt + response, no padding); wall and CPU seconds per step,
from the second step on (the machine may be shared: CPU time is what the step cost); the
peak resident memory of the child (VmHWM, loading and saving included); the most tokens
in one micro-batch (padding included) and the peak per 1,000 of them. Last, ssd-local's
automatic settings against the peft loop with checkpointing: memory and step CPU time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _clock() -> tuple[float, float]:
    return time.monotonic(), time.process_time()


def _per_step(clocks: list[tuple[float, float]]) -> tuple[float, float]:
    """(wall, CPU) seconds per step between the first and the last step's end."""
    (w0, c0), (w1, c1) = clocks[0], clocks[-1]
    n = max(len(clocks) - 1, 1)
    return (w1 - w0) / n, (c1 - c0) / n


def ours(home: str, mode: str, steps: int, batch: int | None, ckpt: bool | None,
         compact: bool | None, q: mp.Queue) -> None:
    os.environ["SSD_LOCAL_HOME"] = home
    from ssd_local import events
    from ssd_local.app.runs import Run, runs_root
    from ssd_local.app.training import train
    from ssd_local.backends import torch_train
    from ssd_local.backends.train_common import peak_rss_mb
    from ssd_local.config import TrainConfig

    name = f"bench-{mode}-{batch}-{ckpt}"
    shutil.rmtree(runs_root() / name, ignore_errors=True)
    shutil.copytree(runs_root() / "bench", runs_root() / name,
                    ignore=shutil.ignore_patterns(".lock"))
    widest = [0]
    collate = torch_train.collate

    def counting(rows, pad_id, device):  # the tokens of each micro-batch, padding included
        out = collate(rows, pad_id, device)
        widest[0] = max(widest[0], out["input_ids"].numel())
        return out

    torch_train.collate = counting
    cfg = TrainConfig(max_steps=steps, batch_size=batch, effective_batch=8, batching=mode,
                      gradient_checkpointing=ckpt, compact_memory=compact, val_fraction=0.0,
                      save_every=10_000)
    rows, clocks = [], []

    def on_event(e):
        if isinstance(e, events.Progress) and e.stage == "train":
            rows.append(e.metrics)
            clocks.append(_clock())

    train(name, cfg, on_event=on_event, fuse_after=False)
    mem = Run.load(name).manifest["stages"]["train"]["memory"]
    wall, cpu = _per_step(clocks)
    q.put({"tps": rows[-1]["tokens_per_s"], "wall": wall, "cpu": cpu, "peak": peak_rss_mb(),
           "in_flight": widest[0], "batch": mem["batch_size"],
           "ckpt": mem["gradient_checkpointing"], "compact": mem.get("compact_memory"),
           "estimate": (mem["estimate_gib"] or {}).get("total")})


def baseline(home: str, steps: int, ckpt: bool, q: mp.Queue) -> None:
    """What a user would write by hand with transformers + peft."""
    os.environ["SSD_LOCAL_HOME"] = home
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssd_local.app import models
    from ssd_local.app.runs import runs_root
    from ssd_local.backends.train_common import peak_rss_mb

    folder = models.ensure_hf_folder(models.resolve("smollm2-135m"))
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
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
    model.train()
    tokens, i, widest, clocks, t0 = 0, 0, 0, [], time.monotonic()
    for _ in range(steps):
        for _ in range(2):  # 2 x 4 = effective batch 8
            batch = [data[(i + j) % len(data)] for j in range(4)]
            i += 4
            width = max(len(x) for x, _ in batch)
            widest = max(widest, 4 * width)
            ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in batch])
            lab = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss / 2
            loss.backward()
            tokens += sum(len(x) for x, _ in batch)
        opt.step()
        opt.zero_grad()
        clocks.append(_clock())
    wall, cpu = _per_step(clocks)
    q.put({"tps": tokens / (time.monotonic() - t0), "wall": wall, "cpu": cpu,
           "peak": peak_rss_mb(), "in_flight": widest, "batch": 4, "ckpt": ckpt})


def in_child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def line(label: str, r: dict) -> str:
    est = f"  estimate {r['estimate']:.2f} GiB" if r.get("estimate") else ""
    return (f"  {label:34s} {r['tps']:6.1f} tok/s  {r['wall']:6.1f} s/step wall  "
            f"{r['cpu']:6.1f} s/step CPU  peak {r['peak']:6.0f} MB  {r['in_flight']:5d} tokens "
            f"in flight  {1000 * r['peak'] / max(r['in_flight'], 1):6.0f} MB/1k tokens{est}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--batching", default="group",
                    help="ssd-local batching modes, comma-separated (none, group, pack)")
    ap.add_argument("--rows", default="peft-off,peft-on,auto,off,on",
                    help="which rows to run: peft-off, peft-on (the peft loop), auto, off, on "
                         "(ssd-local: automatic settings, checkpointing off, on)")
    ap.add_argument("--compact-memory", choices=("auto", "on", "off"), default="auto",
                    help="ssd-local's --compact-memory on every row of ours (default: the "
                         "plan's choice)")
    ap.add_argument("--home", default=os.path.join(tempfile.gettempdir(), "ssd-local-bench"))
    a = ap.parse_args()
    os.environ["SSD_LOCAL_HOME"] = a.home
    from ssd_local.app.sampling import sample
    from ssd_local.config import SampleConfig

    # the model's own answers, varied lengths: T=1.0 as in the generic preset
    sample("smollm2-135m", SampleConfig(limit=a.prompts, max_new_tokens=a.max_new_tokens),
           "bench")
    print(f"SmolLM2-135M, LoRA r=16 all-linear, CPU fp32, {a.steps} steps x 8 examples "
          f"(answers up to {a.max_new_tokens} tokens)", flush=True)
    rows = a.rows.split(",")
    compact = {"auto": None, "on": True, "off": False}[a.compact_memory]
    peft = {}
    for ckpt in (False, True):
        if f"peft-{'on' if ckpt else 'off'}" in rows:
            peft[ckpt] = in_child(baseline, a.home, a.steps, ckpt)
            print(line(f"peft loop, checkpointing {'on' if ckpt else 'off'}", peft[ckpt]),
                  flush=True)
    auto = None
    for mode in a.batching.split(","):
        for row, batch, ckpt in (("auto", None, None), ("off", 4, False), ("on", 4, True)):
            if row not in rows:
                continue
            r = in_child(ours, a.home, mode, a.steps, batch, ckpt, compact)
            how = "auto: " if batch is None else ""
            label = (f"ours {mode}, {how}batch {r['batch']}, ckpt "
                     f"{'on' if r['ckpt'] else 'off'}" + (", compact" if r["compact"] else ""))
            print(line(label, r), flush=True)
            auto = auto or (r if batch is None else None)
    if auto and True in peft:
        ref = peft[True]
        print(f"ours (auto) / peft loop with checkpointing: memory "
              f"{auto['peak'] / ref['peak']:.2f}x, step CPU time {auto['cpu'] / ref['cpu']:.2f}x,"
              f" wall {auto['wall'] / ref['wall']:.2f}x (target: memory <= 1.00x at <= 1.30x "
              "the step time)", flush=True)


if __name__ == "__main__":
    main()
