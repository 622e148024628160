"""SSD training: the loss mask token by token, packing, resume after kill -9, fuse, DDP and
FSDP under torchrun (2 CPU processes, gloo), and the user-facing errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, copy_run, run_cli, step_losses
from ssd_local.config import SampleConfig, TrainConfig
from ssd_local.app.trainset import IGNORE, build_examples
from ssd_local.backends.train_common import plan_epoch

torch = pytest.importorskip("torch")


@pytest.fixture
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def _sample(pid, completion, finish="stop", degenerate=None, looped=False, prompt="Add."):
    return {"prompt_id": pid, "sample_index": 0, "prompt": prompt,
            "prompt_text": f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
            "completion": completion, "finish_reason": finish, "degenerate": degenerate,
            "looped": looped}


def test_loss_mask_token_by_token(tok):
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    samples = [_sample("a", "```python\ndef f(x):\n    return x\n```"),
               _sample("b", "def g(y):\n    return", finish="length"),
               _sample("c", "", degenerate="empty"),
               _sample("d", "x\n" * 50, looped=True)]
    train, val, rep = build_examples(samples, enc, tok.eos_token_id, 4096, 0.0, 0,
                                     drop_looped=True)
    assert (rep.used, rep.dropped_degenerate, rep.dropped_looped, rep.without_end_token) == \
        (2, 1, 1, 1)
    for s, ex in zip(samples[:2], train, strict=True):
        p = enc(s["prompt_text"])
        c = enc(s["completion"])
        end = [tok.eos_token_id] if s["finish_reason"] == "stop" else []
        assert ex.input_ids == p + c + end
        for i, (x, y) in enumerate(zip(ex.input_ids, ex.labels, strict=True)):
            if i < len(p):
                assert y == IGNORE, i  # every prompt token is masked
            else:
                assert y == x, i  # every response token is learned, the end token too
    assert train[0].labels[-1] == tok.eos_token_id
    assert train[1].labels[-1] != tok.eos_token_id  # cut at the length limit: no end token


def test_collate_masks_padding_and_restarts_positions(tok):
    from ssd_local.backends.torch_train import collate

    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    train, _, _ = build_examples([_sample("a", "short\nanswer"),
                                  _sample("b", "a much longer answer\n" * 3)],
                                 enc, tok.eos_token_id, 4096, 0.0, 0)
    a, b = train
    padded = collate([[a], [b]], tok.pad_token_id, torch.device("cpu"))
    n_a = len(a.input_ids)
    assert padded["input_ids"][0, n_a:].eq(tok.pad_token_id).all()
    assert padded["labels"][0, n_a:].eq(IGNORE).all()  # every padding token is masked
    assert padded["labels"][0, :n_a].tolist() == a.labels
    packed = collate([[a, b]], tok.pad_token_id, torch.device("cpu"))
    assert packed["position_ids"][0].tolist() == list(range(n_a)) + list(range(len(b.input_ids)))
    assert packed["responses"] == a.n_response + b.n_response


def test_packed_loss_equals_separatestep_losses(tiny_model, tok):
    """Attention stays inside each packed example: packing changes no loss."""
    from ssd_local.backends.torch_train import ResponseLoss, collate, load_model

    model, _ = load_model(tiny_model, TrainConfig(lora_dropout=0.0), torch.float32)
    module = ResponseLoss(model).eval()
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    exs, _, _ = build_examples([_sample(str(i), f"answer {i}\n" * (i + 1)) for i in range(3)],
                               enc, tok.eos_token_id, 4096, 0.0, 0)
    cpu = torch.device("cpu")
    with torch.no_grad():
        packed = module(**{k: v for k, v in collate([exs], 0, cpu).items()
                           if k in ("input_ids", "position_ids", "labels")})
        apart = sum(module(**{k: v for k, v in collate([[e]], 0, cpu).items()
                              if k in ("input_ids", "position_ids", "labels")}) for e in exs)
    assert torch.allclose(packed, apart, rtol=1e-5)


def test_plan_is_a_pure_function_of_the_step():
    lengths = [5, 80, 30, 30, 7, 64, 12, 9, 40, 3]
    a = plan_epoch(lengths, "pack", 2, 4, 64, seed=3, epoch=1)
    assert a == plan_epoch(lengths, "pack", 2, 4, 64, seed=3, epoch=1)
    assert a != plan_epoch(lengths, "pack", 2, 4, 64, seed=3, epoch=2)
    for mode in ("pack", "group", "none"):
        steps = plan_epoch(lengths, mode, 2, 4, 64, seed=0, epoch=0)
        seen = sorted(i for st in steps for mb in st for row in mb for i in row)
        assert seen == list(range(10))  # every example exactly once per epoch
        assert all(sum(len(r) for mb in st for r in mb) <= 4 for st in steps)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    from ssd_local.backends.torch_train import lr_at

    cfg = TrainConfig(lr=1e-4, warmup_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4)
    assert max(lrs) == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(2e-5, rel=0.01)  # 1e-4 x 0.2, the paper's 5e-6 -> 1e-6


@pytest.fixture
def sampled_run(tiny_model):
    from ssd_local.app.sampling import sample

    sample(str(tiny_model), SampleConfig(limit=24, max_new_tokens=12, batch_size=8), "base")
    return "base"


TRAIN = ["--effective-batch", "4", "--batch-size", "2", "--save-every", "2",
         "--lora-dropout", "0.1", "--val-fraction", "0.1"]


def test_kill_dash_nine_resume_matches_an_uninterrupted_run(sampled_run):
    a = copy_run(sampled_run, "a")
    b = copy_run(sampled_run, "b")
    r = run_cli("train", "a", "--max-steps", "30", "--no-fuse", *TRAIN)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "train", "b",
                             "--max-steps", "30", "--no-fuse", *TRAIN], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (b / "checkpoints" / "step-0000004").exists() and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = len(step_losses(b))
    assert steps_before < 30
    r = run_cli("train", "b", "--max-steps", "30", "--no-fuse", *TRAIN)
    assert r.returncode == 0, r.stderr
    assert len(list((b / "checkpoints").glob("step-*"))) == 2  # --keep-checkpoints 2
    la, lb = step_losses(a), step_losses(b)
    assert [s for s, _ in lb] == list(range(1, 31))
    for (sa, x), (sb, y) in zip(la, lb, strict=True):
        assert sa == sb and x == pytest.approx(y, abs=1e-6), (sa, x, y)


def test_fuse_round_trip_equals_base_plus_adapter(sampled_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssd_local.app.training import train

    train(sampled_run, TrainConfig(max_steps=3, effective_batch=4, batch_size=2, lr=1e-2))
    from ssd_local.app.runs import Run

    run = Run.load(sampled_run)
    merged = AutoModelForCausalLM.from_pretrained(str(run.path / "merged")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    lora = PeftModel.from_pretrained(base, str(run.path / "adapter")).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        a, b = merged(ids).logits, lora(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model))(ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, plain, atol=1e-4)  # the adapter changed something
    tok = AutoTokenizer.from_pretrained(str(run.path / "merged"))
    assert tok.chat_template
    gen = json.loads((run.path / "merged" / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_k"], gen["top_p"]) == (1.1, 20, 0.8)  # T_eval
    assert run.manifest["recommended_decoding"]["temperature"] == 1.1
    assert run.stage_state("fuse") == "done"


@pytest.mark.parametrize("flags", [[], ["--fsdp"]], ids=["ddp", "fsdp"])
def test_two_processes_match_one(sampled_run, flags):
    """torchrun with 2 CPU processes (gloo) gives the single-process losses: the loss is
    normalised over the whole step, so the split across processes does not matter."""
    one, two = copy_run(sampled_run, "one"), copy_run(sampled_run, "two")
    args = ["--max-steps", "4", "--no-fuse", *TRAIN]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same CPU kernels on both sides
    r = run_cli("train", "one", *args, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "-m", "ssd_local.cli", "train", "two", *args, *flags], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # Stated tolerance: 1e-4 relative. Gradients are summed in another order across two
    # processes, and AdamW's normalisation magnifies float noise in near-zero gradients.
    for (s1, x), (s2, y) in zip(step_losses(one), step_losses(two), strict=True):
        assert s1 == s2 and x == pytest.approx(y, rel=1e-4)
    assert len(step_losses(two)) == 4


def test_user_mistakes(tiny_model, sampled_run):
    r = run_cli("train", "nope")
    assert r.returncode == 2 and "no run named 'nope'" in r.stderr
    r = run_cli("train", sampled_run, "--effective-batch", "1", "--batch-size", "2")
    assert r.returncode == 2 and "--effective-batch" in r.stderr
    r = run_cli("fuse", sampled_run)
    assert r.returncode == 2 and "no finished training" in r.stderr
    from ssd_local.app.runs import Run

    empty = copy_run(sampled_run, "empty")
    (empty / "samples.jsonl").write_text("")
    r = run_cli("train", "empty")
    assert r.returncode == 2 and "has no samples yet" in r.stderr
    other = copy_run(sampled_run, "other")
    rows = [json.loads(x) for x in (other / "samples.jsonl").read_text().splitlines()]
    for x in rows:
        x["prompt_text"] = "### Instruction:\n" + x["prompt"] + "\n### Response:\n"
    (other / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = run_cli("train", "other")
    assert r.returncode == 2 and "another chat template" in r.stderr
    assert Run.load("other").stage_state("train") == "pending"


@pytest.mark.slow
def test_done_when_train_smollm2_three_steps(smollm2):
    r = run_cli("sample", "smollm2-135m", "--limit", "4", "--max-new-tokens", "32", "--run", "r1")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "r1", "--max-steps", "3", "--effective-batch", "4")
    assert r.returncode == 0, r.stderr
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssd_local.app.runs import Run

    merged = Run.load("r1").path / "merged"
    tok = AutoTokenizer.from_pretrained(str(merged))
    AutoModelForCausalLM.from_pretrained(str(merged))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
