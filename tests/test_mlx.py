"""The MLX backend for real, on MLX's CPU build: sampling in the paper's order with
per-sample seeds, LoRA training with a real resume, torch/mlx loss parity, QLoRA on a
quantized model, fuse into a standard transformers folder and its GGUF export, backend
selection and `ssd-local doctor`. Apple-silicon-only behaviour is marked `mac`."""

import json
import shutil
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, copy_run, run_cli, step_losses
from ssd_local import events as ev
from ssd_local.config import SampleConfig, TrainConfig
from ssd_local.errors import Cancelled, UserError
from ssd_local.backends import apple_silicon, auto_sampling_backend, auto_training_backend

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

REQUIRED = {"prompt_id", "sample_index", "prompt", "prompt_text", "completion",
            "prompt_tokens", "completion_tokens", "finish_reason", "degenerate", "looped",
            "has_code", "seed", "engine"}
# Training settings small enough for 2 CPU cores; dropout on, so resume must replay it.
SMALL = dict(effective_batch=4, batch_size=2, save_every=2, val_fraction=0.1, lr=1e-2,
             lora_dropout=0.1, lora_rank=4, lora_alpha=8)


# -- selection ---------------------------------------------------------------------------------
def test_automatic_backend_rules():
    every = {"mlx", "torch", "llamacpp"}
    assert auto_sampling_backend("hf", True, every) == "mlx"
    assert auto_sampling_backend("gguf", True, every) == "mlx"  # converted once
    assert auto_sampling_backend("gguf", True, {"mlx", "llamacpp"}) == "llamacpp"  # no torch
    assert auto_sampling_backend("hf", True, {"torch"}) == "torch"  # mlx not installed
    assert auto_sampling_backend("hf", False, every) == "torch"  # Linux/Windows, CUDA or not
    assert auto_sampling_backend("gguf", False, every) == "llamacpp"
    assert auto_training_backend(True, every) == "mlx"
    assert auto_training_backend(False, every) == "torch"
    assert auto_training_backend(True, {"torch"}) == "torch"


def test_backend_flag_overrides_and_is_generated_from_the_config():
    from ssd_local.backends import choose_sampling_backend, choose_training_backend
    from ssd_local.cli import build_parser

    assert choose_sampling_backend("gguf", "mlx") == "mlx"
    assert choose_training_backend("mlx") == "mlx"
    assert choose_training_backend(None) == ("mlx" if apple_silicon() else "torch")
    args = build_parser().parse_args(["train", "r", "--backend", "mlx"])
    assert args.backend == "mlx"
    args = build_parser().parse_args(["distill", "m", "--backend", "mlx", "--train-backend",
                                      "torch"])
    assert (args.backend, args.train_backend) == ("mlx", "torch")
    with pytest.raises(UserError, match="--backend"):
        TrainConfig(backend="jax").validate()


@pytest.mark.mac
@pytest.mark.skipif(not apple_silicon(), reason="needs Apple silicon")
def test_apple_silicon_defaults_to_mlx_on_metal(tiny_model):
    from ssd_local.backends import choose_sampling_backend, choose_training_backend

    assert choose_sampling_backend("hf", None) == "mlx"
    assert choose_training_backend(None) == "mlx"
    assert mx.metal.is_available() and mx.default_device() == mx.gpu


def test_doctor_names_hardware_backends_and_choices():
    r = run_cli("doctor")
    assert r.returncode == 0, r.stderr
    from importlib.metadata import version

    assert f"mlx {version('mlx')}" in r.stdout and f"mlx-lm {version('mlx-lm')}" in r.stdout
    assert "CPU cores" in r.stdout and "GiB memory" in r.stdout
    expected = "training -> mlx" if apple_silicon() else "training -> torch"
    assert expected in r.stdout
    assert "missing" in r.stdout


def test_core_imports_neither_mlx_nor_torch():
    code = ("import sys, ssd_local.app.training, ssd_local.app.doctor, ssd_local.backends.mlx, "
            "ssd_local.backends.train_common, ssd_local.cli\n"
            "print([m for m in ('mlx', 'torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


# -- sampling ----------------------------------------------------------------------------------
def _drawn(sampler, logprobs, n=400):
    return {int(sampler(logprobs).item()) for _ in range(n)}


def test_sampler_applies_temperature_then_top_k_then_top_p():
    from mlx_lm.sample_utils import make_sampler

    from ssd_local.backends.base import SamplingParams
    from ssd_local.backends.mlx import paper_sampler

    # p = (0.5, 0.3, 0.2): top-k 2 renormalises to (0.625, 0.375), so top-p 0.6 keeps one
    # token; top-p before top-k would keep two.
    lp = mx.log(mx.array([[0.5, 0.3, 0.2]]))
    assert _drawn(paper_sampler(SamplingParams(1.0, 2, 0.6, 1), 0), lp) == {0}
    assert _drawn(paper_sampler(SamplingParams(1.0, 0, 0.6, 1), 0), lp) == {0, 1}
    # Temperature comes first: at T=1 top-p 0.55 keeps (0.6, 0.3, 0.1)'s first token only;
    # T=3 flattens it to about (0.44, 0.35, 0.22), so top-p 0.55 keeps two. mlx-lm's own
    # make_sampler applies top-p before the temperature and keeps one: why we build ours.
    lp = mx.log(mx.array([[0.6, 0.3, 0.1]]))
    assert _drawn(paper_sampler(SamplingParams(1.0, 0, 0.55, 1), 0), lp) == {0}
    assert _drawn(paper_sampler(SamplingParams(3.0, 0, 0.55, 1), 0), lp) == {0, 1}
    assert _drawn(make_sampler(temp=3.0, top_p=0.55), lp) == {0}
    assert _drawn(paper_sampler(SamplingParams(3.0, 0, 1.0, 1), 0), lp) == {0, 1, 2}
    assert int(paper_sampler(SamplingParams(0.0, 0, 1.0, 1), 0)(lp).item()) == 0  # greedy
    # each sampler has its own key chain: same seed, same draws
    lp = mx.log(mx.ones((1, 50)) / 50)
    a, b, c = (paper_sampler(SamplingParams(1.0, 0, 1.0, 1), s) for s in (7, 7, 8))
    da, db, dc = ([int(s(lp).item()) for _ in range(20)] for s in (a, b, c))
    assert da == db and da != dc


def test_mlx_sampling_stage_records_resume_and_seeds(tiny_model):
    got = []
    cfg = SampleConfig(limit=3, max_new_tokens=8, batch_size=2, samples_per_prompt=2,
                       backend="mlx")
    from ssd_local.app.sampling import sample

    run, summary = sample(str(tiny_model), cfg, "m", on_event=got.append)
    rows = run.read_samples()
    assert summary.samples == 6 and REQUIRED <= set(rows[0])
    assert all(r["engine"] == "mlx" and r["completion_tokens"] <= 8 for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert rows[0]["prompt_text"].startswith("<|im_start|>system\nYou are an expert Python")
    assert any(isinstance(e, ev.Progress) and e.done == 6 for e in got)
    # a larger --limit extends the run, no duplicates
    run, summary = sample(str(tiny_model), SampleConfig(limit=4, max_new_tokens=8,
                                                        batch_size=2, samples_per_prompt=2,
                                                        backend="mlx"), "m")
    keys = [(r["prompt_id"], r["sample_index"]) for r in run.read_samples()]
    assert len(keys) == len(set(keys)) == 8
    # the same command elsewhere gives the same samples (per-sample seeds)
    run2, _ = sample(str(tiny_model), SampleConfig(limit=4, max_new_tokens=8, batch_size=2,
                                                   samples_per_prompt=2, backend="mlx"), "m2")
    by_key = lambda rs: {(r["prompt_id"], r["sample_index"]): r["completion"] for r in rs}  # noqa
    assert by_key(run.read_samples()) == by_key(run2.read_samples())


def test_mlx_model_matches_transformers_including_rope_settings(tiny_model, tmp_path):
    """mlx-lm reads rope_theta; transformers 5 writes rope_parameters. A non-default theta
    must reach mlx (or it would silently decode another model)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from ssd_local.backends.mlx import load

    folder = tmp_path / "theta"
    shutil.copytree(tiny_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_theta", None)
    cfg["rope_parameters"] = {"rope_theta": 100000.0, "rope_type": "default"}
    (folder / "config.json").write_text(json.dumps(cfg))
    ids = [[5, 17, 42, 99, 7, 3, 250, 11, 300, 12] * 3]
    ref = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert ref.config.rope_parameters["rope_theta"] == 100000.0
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    model, _ = load(folder)
    got = np.array(model(mx.array(ids)))
    assert np.allclose(got, want, atol=1e-4), np.abs(got - want).max()


# -- training ----------------------------------------------------------------------------------
def _code(i):
    return "```python\n" + "".join(f"def f{j}(x):\n    return x + {j}\n"
                                   for j in range(1 + i % 4)) + "```"


@pytest.fixture
def mlx_run(tiny_model):
    """A run sampled by the mlx engine; its completions replaced by multi-line code so every
    sample is kept (a random 2-layer model mostly writes one-line noise)."""
    from ssd_local.app.runs import runs_root
    from ssd_local.app.sampling import sample

    sample(str(tiny_model), SampleConfig(limit=16, max_new_tokens=4, batch_size=8,
                                         backend="mlx"), "base")
    path = runs_root() / "base" / "samples.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for i, x in enumerate(rows):
        x.update(completion=_code(i), degenerate=None,
                 finish_reason="stop" if i % 3 else "length")
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return "base"


def test_training_resumes_after_a_stop_with_optimizer_state_and_step(mlx_run):
    from ssd_local.app.runs import Run
    from ssd_local.app.training import train

    a, b = copy_run(mlx_run, "a"), copy_run(mlx_run, "b")
    cfg = TrainConfig(backend="mlx", max_steps=5, **SMALL)
    train("a", cfg, fuse_after=False)
    cancel = threading.Event()

    def stop_at_three(e):
        if isinstance(e, ev.Progress) and e.stage == "train" and e.done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        train("b", cfg, on_event=stop_at_three, cancel=cancel, fuse_after=False)
    assert Run.load("b").stage_state("train") == "cancelled"
    ckpt = b / "checkpoints" / "step-0000003"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 3 and state["backend"] == "mlx"
    opt = mx.load(str(ckpt / "optimizer.safetensors"))
    assert int(opt["step"].item()) == 3  # AdamW's own step count (bias correction)
    moments = [v for k, v in opt.items() if k.endswith((".m", ".v"))]
    assert moments and all(float(mx.abs(v).sum()) > 0 for v in moments)
    adapter = mx.load(str(ckpt / "adapters.safetensors"))
    assert any(k.endswith("lora_b") for k in adapter)
    assert len(step_losses(b)) == 3

    events = []
    train("b", cfg, on_event=events.append, fuse_after=False)
    started = [e for e in events if isinstance(e, ev.StageStarted) and e.stage == "train"]
    assert started[0].done == 3  # resumed at the saved step, not from scratch
    la, lb = step_losses(a), step_losses(b)
    assert [s for s, _ in lb] == [1, 2, 3, 4, 5]
    for (sa, x), (sb, y) in zip(la, lb, strict=True):  # same data, dropout, AdamW moments and lr
        assert sa == sb and x == pytest.approx(y, rel=1e-5), (sa, x, y)
    assert sorted(p.name for p in (b / "checkpoints").glob("step-*")) == \
        ["step-0000004", "step-0000005"]  # --keep-checkpoints 2
    assert (b / "adapter" / "adapters.safetensors").exists()
    # a run started with mlx is not continued by torch
    with pytest.raises(UserError, match="resume with --backend mlx"):
        train("b", TrainConfig(backend="torch", max_steps=6, **SMALL))


# Stated tolerance for the first-step loss on the two backends: 1e-5 relative. Both run
# fp32 on the same examples with the same masking; LoRA's B starts at zero, so step 1 is
# the base model's loss and only float summation order differs (observed: about 1e-7).
PARITY_RTOL = 1e-5


def test_first_step_loss_matches_torch(mlx_run):
    pytest.importorskip("torch")
    from ssd_local.app.training import train

    copy_run(mlx_run, "pt"), copy_run(mlx_run, "mx")
    for name, backend in (("pt", "torch"), ("mx", "mlx")):
        train(name, TrainConfig(backend=backend, max_steps=1, **SMALL), fuse_after=False)
    from ssd_local.app.runs import runs_root

    (_, pt), = step_losses(runs_root() / "pt")
    (_, ml), = step_losses(runs_root() / "mx")
    assert ml == pytest.approx(pt, rel=PARITY_RTOL), (pt, ml, abs(pt - ml) / pt)


def _sampled_with_code(model_dir, name, limit=6):
    from ssd_local.app.runs import runs_root
    from ssd_local.app.sampling import sample

    sample(str(model_dir), SampleConfig(limit=limit, max_new_tokens=4, batch_size=8,
                                        backend="mlx"), name)
    path = runs_root() / name / "samples.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for i, x in enumerate(rows):
        x.update(completion=_code(i), degenerate=None, finish_reason="stop")
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return runs_root() / name


def test_fuse_gives_a_standard_folder_that_exports_to_gguf(smol_tokenizer_model):
    pytest.importorskip("llama_cpp")
    import numpy as np
    import torch
    from mlx_lm import load as mlx_load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssd_local.config import ExportConfig
    from ssd_local.app.export import export
    from ssd_local.app.runs import Run
    from ssd_local.app.training import train

    run_dir = _sampled_with_code(smol_tokenizer_model, "fx")
    train("fx", TrainConfig(backend="mlx", max_steps=2, lr=1e-2, effective_batch=4,
                            batch_size=4, val_fraction=0.0))
    merged = run_dir / "merged"
    cfg = json.loads((merged / "config.json").read_text())
    assert "quantization" not in cfg and "quantization_config" not in cfg
    gen = json.loads((merged / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_k"], gen["top_p"]) == (1.1, 20, 0.8)  # T_eval
    assert AutoTokenizer.from_pretrained(str(merged)).chat_template
    ids = [[5, 17, 42, 99, 7, 3, 250, 11]]
    fused = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(smol_tokenizer_model)).eval()
    with torch.no_grad():
        a = fused(torch.tensor(ids)).logits.numpy()
        plain = base(torch.tensor(ids)).logits.numpy()
    lora, _ = mlx_load(str(smol_tokenizer_model), adapter_path=str(run_dir / "adapter"))
    b = np.array(lora(mx.array(ids)))
    assert np.allclose(a, b, atol=1e-4)  # merged in transformers == base + adapter in mlx
    assert not np.allclose(a, plain, atol=1e-4)  # the adapter changed something
    assert Run.load("fx").stage_state("fuse") == "done"
    ggufs = export("fx", ExportConfig(quant="q8_0")).ggufs
    assert (run_dir / "gguf" / "fx-q8_0.gguf").exists() and ggufs["q8_0"].bytes > 0


def test_qlora_on_a_quantized_model_fuses_dequantized(tiny_model, tmp_path):
    import numpy as np
    from mlx_lm import convert
    from transformers import AutoModelForCausalLM

    from ssd_local.app.training import train

    quantized = tmp_path / "tiny-4bit"
    convert(str(tiny_model), mlx_path=str(quantized), quantize=True, q_group_size=32,
            q_bits=4)
    assert "quantization" in json.loads((quantized / "config.json").read_text())
    run_dir = _sampled_with_code(quantized, "q", limit=4)
    assert json.loads((run_dir / "samples.jsonl").read_text().splitlines()[0])["engine"] == "mlx"
    train("q", TrainConfig(backend="mlx", max_steps=1, effective_batch=4, batch_size=4,
                           val_fraction=0.0))
    merged = run_dir / "merged"
    cfg = json.loads((merged / "config.json").read_text())
    assert "quantization" not in cfg and "quantization_config" not in cfg
    weights = mx.load(str(merged / "model.safetensors"))
    assert not any(k.endswith((".scales", ".biases")) for k in weights)
    assert all(mx.issubdtype(v.dtype, mx.floating) for v in weights.values())
    m = AutoModelForCausalLM.from_pretrained(str(merged))  # a plain transformers model
    assert np.isfinite(m.model.layers[0].self_attn.q_proj.weight.detach().numpy()).all()


@pytest.mark.slow
def test_done_when_smollm2_sample_and_train_with_mlx(smollm2, ssd_home, tmp_path):
    # two short prompts, one optimizer step of both: MLX's CPU build (Linux) trains slowly
    prompts = tmp_path / "short.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Write add(a, b)."}\n'
                       '{"id": "b", "prompt": "Write neg(x)."}\n')
    r = run_cli("sample", "smollm2-135m", "--backend", "mlx", "--prompts", str(prompts),
                "--limit", "2", "--max-new-tokens", "16", "--run", "r3")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in
            (ssd_home / "runs" / "r3" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(x["engine"] == "mlx" and x["completion_tokens"] <= 16
                                  for x in rows)
    assert REQUIRED <= set(rows[0])
    r = run_cli("train", "r3", "--backend", "mlx", "--max-steps", "2", "--effective-batch", "2")
    assert r.returncode == 0, r.stderr
    assert (ssd_home / "runs" / "r3" / "merged" / "config.json").exists()
    metrics = (ssd_home / "runs" / "r3" / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == [1, 2]
