"""Training memory: the estimate's arithmetic on known shapes, the plan's choices (fits,
needs checkpointing, needs a smaller micro-batch, refuses; explicit flags win), the refusal
through the CLI for a 4B-shaped model without weights, the estimate in the TUI form, and
the estimate against peaks measured by training the tiny model and a slice of SmolLM2.

Stated margin (also in README "Training"): the measured peak is between 0.75 and 1.10
times the estimate. The estimate may overshoot by a third (it counts one layer of backward
workspace and every LoRA dropout mask in full) and never undershoots by more than 10%."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from ssd_local.app import memory as M
from ssd_local.backends.base import TrainDevice
from ssd_local.config import TrainConfig
from ssd_local.errors import UserError

GiB = M.GiB
MARGIN = (0.75, 1.10)  # measured peak / estimate (the runtime differs by ~80 MiB between installs)
SMOLLM2 = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576,
           "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
           "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
           "dtype": "bfloat16"}
QWEN3_4B = {"model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 2560,
            "intermediate_size": 9728, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16"}
CPU = TrainDevice("torch", "cpu", 16 * GiB, "available RAM", act_bytes=4, weight_bytes=4)


def shape(batch: int, tokens: int, ck: bool, **kw) -> M.Shape:
    return M.Shape(batch, tokens, ck, kw.pop("full", False), kw.pop("rank", 16),
                   kw.pop("targets", "all-linear"), kw.pop("dropout", True), **kw)


# -- arithmetic ----------------------------------------------------------------------------
def test_parameter_counts_of_known_shapes():
    smol, qwen = M.dims_from_config(SMOLLM2), M.dims_from_config(QWEN3_4B)
    assert smol.params() == 134_515_008  # SmolLM2-135M
    assert qwen.params() == 4_022_468_096  # Qwen3-4B
    assert M.lora_params(smol, 16, "all-linear") == 4_884_480  # peft's count, README
    assert M.lora_params(qwen, 16, "all-linear") == 33_030_144
    assert M.lora_params(qwen, 8, "q_proj,v_proj") == 36 * 8 * (2560 + 4096 + 2560 + 1024)
    assert (qwen.q_dim, qwen.kv_dim, qwen.weight_bytes, qwen.tied) == (4096, 1024, 2, True)
    q4 = M.dims_from_config({**QWEN3_4B, "quantization": {"bits": 4, "group_size": 64}})
    assert q4.quantized and q4.weight_bytes == pytest.approx(0.5 + 4 / 64)


def test_estimate_terms_on_smollm2():
    """Each term by hand: fp32 on CPU, LoRA r=16 on all 7 linears with dropout."""
    d = M.dims_from_config(SMOLLM2)
    e = M.estimate(d, shape(4, 512, False, responses=1536), CPU)
    h, q, kv, i, r = 576, 576, 192, 1536, 16
    inputs = 3 * h + q + 2 * h + i  # what each adapter reads
    layer = 4 * (2 * q + 2 * kv + 9 + 3 * i + inputs + 7 * r) + 4 * 2 * h + 4 * inputs
    assert e.weights == 134_515_008 * 4
    assert e.trainable == 4_884_480 * 16
    assert e.activations == 2048 * (30 * layer + layer + 3 * h * 4)
    assert e.logits == min(1536, 2**25 // 49152) * 49152 * 8  # one chunk; 8 B on torch-CPU
    ck = M.estimate(d, shape(4, 512, True, responses=1536), CPU)
    assert ck.activations == 2048 * (30 * h * 4 + 2 * layer + 3 * h * 4)
    assert ck.activations < e.activations / 9
    cuda = M.estimate(d, shape(4, 512, False), replace(CPU, kind="cuda", act_bytes=2,
                                                       weight_bytes=2))
    assert cuda.weights == e.weights / 2 and cuda.activations < e.activations * 0.6
    mlx = M.estimate(d, shape(4, 512, False, responses=1536),
                     TrainDevice("mlx", "metal", 0, ""))
    assert mlx.weights == 134_515_008 * 2  # as stored (bf16)
    assert mlx.logits == 1536 * 49152 * 20  # all response positions at once


def test_config_reading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B))
    assert M.read_dims(tmp_path).layers == 36
    with pytest.raises(UserError, match="mixture-of-experts"):
        M.dims_from_config({**QWEN3_4B, "num_experts": 128})
    with pytest.raises(UserError, match="lacks 'hidden_size'"):
        M.dims_from_config({"num_hidden_layers": 2})


def test_gguf_header_gives_the_shape(smollm2):
    from ssd_local.backends.gguf_shape import gguf_config

    d = M.dims_from_config(gguf_config(smollm2))
    assert d == replace(M.dims_from_config(SMOLLM2), weight_bytes=4)  # trained as fp32


# -- the plan ----------------------------------------------------------------------------
WORK = M.Workload((512,) * 40, (384,) * 40)  # activations dominate: checkpointing pays
SHORT = M.Workload((64,) * 40, (32,) * 40)  # weights and runtime dominate: it does not


def need(cfg: TrainConfig, b: int, ck: bool, work: M.Workload = WORK) -> float:
    return M.estimate(M.dims_from_config(SMOLLM2), work.shape(cfg, b, ck), CPU).total


def plan_with(cfg: TrainConfig, available: float, work: M.Workload = WORK) -> M.MemoryPlan:
    return M.plan(M.dims_from_config(SMOLLM2), cfg, replace(CPU, available=int(available)),
                  work)


def test_auto_keeps_the_defaults_when_they_fit_then_checkpoints_then_halves():
    cfg = TrainConfig()
    p = plan_with(cfg, 64 * GiB, SHORT)
    assert (p.batch_size, p.gradient_checkpointing) == (4, False)
    assert p.note.endswith("micro-batch 4, gradient checkpointing off")
    p = plan_with(cfg, need(cfg, 4, True, SHORT) / M.USABLE * 1.01, SHORT)
    assert (p.batch_size, p.gradient_checkpointing) == (4, True)
    assert "gradient checkpointing off would need" in p.note
    p = plan_with(cfg, 64 * GiB)  # fits without, but checkpointing more than halves it
    assert (p.batch_size, p.gradient_checkpointing) == (4, True)
    assert need(cfg, 4, True) <= M.CHECKPOINT_GAIN * need(cfg, 4, False)
    assert "checkpointing brings the estimate from" in p.note
    p = plan_with(cfg, need(cfg, 2, True) / M.USABLE * 1.01)
    assert (p.batch_size, p.gradient_checkpointing) == (2, True)
    assert "16 micro-batches per step keep the effective batch 32" in p.note
    assert p.apply(cfg).batch_size == 2 and p.apply(cfg).gradient_checkpointing
    assert p.record()["estimate_gib"]["total"] == pytest.approx(need(cfg, 2, True) / GiB,
                                                                abs=1e-3)
    with pytest.raises(UserError, match="--max-seq-len") as exc:
        plan_with(cfg, need(cfg, 1, True) / M.USABLE * 0.99)
    assert "\n" not in str(exc.value)


def test_freed_memory_is_returned_where_the_heap_could_overflow():
    cfg = TrainConfig(batch_size=4, gradient_checkpointing=True)
    est = need(cfg, 4, True)
    roomy = plan_with(cfg, est * M.HEAP_RETENTION / M.USABLE * 1.01)
    assert roomy.compact_memory is False and "returned" not in roomy.note
    tight = plan_with(cfg, est * M.HEAP_RETENTION / M.USABLE * 0.99)
    assert tight.compact_memory is True and tight.apply(cfg).compact_memory
    assert f"freed memory returned at once ({M.HEAP_RETENTION:g}x the estimate" in tight.note
    asked = plan_with(TrainConfig(batch_size=4, gradient_checkpointing=True,
                                  compact_memory=True), 64 * GiB)
    assert asked.compact_memory is True and asked.note.endswith("returned at once")
    on_mlx = replace(CPU, framework="mlx")
    mlx_est = M.estimate(M.dims_from_config(SMOLLM2), WORK.shape(cfg, 4, True), on_mlx).total
    mlx = M.plan(M.dims_from_config(SMOLLM2), cfg,
                 replace(on_mlx, available=int(mlx_est / M.USABLE * 1.5)), WORK)
    assert mlx.compact_memory is False  # MLX has its own allocator
    blind = M.plan(None, TrainConfig(compact_memory=True), CPU, WORK, "no estimate")
    assert blind.apply(TrainConfig(compact_memory=True)).compact_memory is True  # as asked


def test_explicit_flags_win():
    roomy = 64 * GiB
    p = plan_with(TrainConfig(batch_size=8, gradient_checkpointing=True), roomy, SHORT)
    assert (p.batch_size, p.gradient_checkpointing) == (8, True)
    p = plan_with(TrainConfig(gradient_checkpointing=False), roomy)
    assert (p.batch_size, p.gradient_checkpointing) == (4, False)  # though it would halve
    tight = need(TrainConfig(), 2, True) / M.USABLE * 1.01
    p = plan_with(TrainConfig(gradient_checkpointing=False), need(TrainConfig(), 2, False)
                  / M.USABLE * 1.01)
    assert (p.batch_size, p.gradient_checkpointing) == (2, False)  # never switched on
    with pytest.raises(UserError, match="use --batch-size 2 --gradient-checkpointing"):
        plan_with(TrainConfig(batch_size=4, gradient_checkpointing=False), tight)
    p = plan_with(TrainConfig(batch_size=4), need(TrainConfig(), 4, True) / M.USABLE * 1.01)
    assert (p.batch_size, p.gradient_checkpointing) == (4, True)
    # the limit replaces what the device reports
    p = M.plan(M.dims_from_config(SMOLLM2), TrainConfig(memory_limit_gb=1000.0),
               replace(CPU, available=1), WORK)
    assert "set by --memory-limit-gb" in p.note
    # a small effective batch caps the micro-batch
    assert plan_with(TrainConfig(effective_batch=2), roomy).batch_size == 2


def test_refusals_name_the_fix():
    qwen = M.dims_from_config(QWEN3_4B)
    work = M.Workload((3000,) * 40, (2500,) * 40)
    for cfg, device, fix in (
            (TrainConfig(), replace(CPU, available=8 * GiB), "train a smaller model"),
            (TrainConfig(full=True), replace(CPU, available=8 * GiB), "drop --full"),
            (TrainConfig(), TrainDevice("mlx", "metal", 6 * GiB, "MLX's working set"),
             "4-bit mlx-community build"),
            (TrainConfig(), TrainDevice("torch", "cuda", 12 * GiB, "free CUDA memory", 2, 2),
             r"use --max-seq-len \d+ \(the longest example has 3000 tokens\)")):
        with pytest.raises(UserError, match=fix) as exc:
            M.plan(qwen, cfg, device, work)
        assert "\n" not in str(exc.value) and "even at micro-batch 1" in str(exc.value)


def test_no_estimate_runs_the_defaults():
    p = M.plan(None, TrainConfig(), CPU, WORK, "no memory estimate for mixture-of-experts")
    assert (p.batch_size, p.gradient_checkpointing) == (4, False)
    assert "mixture-of-experts" in p.note
    p = M.plan(M.dims_from_config(SMOLLM2), TrainConfig(), replace(CPU, available=0), WORK)
    assert "unknown" in p.note and p.estimate is None


def test_help_says_what_auto_does():
    from dataclasses import fields

    helps = {f.name: f.metadata["help"] for f in fields(TrainConfig)}
    assert "default auto: 4 when the memory estimate fits" in helps["batch_size"]
    assert "default auto: on when the memory estimate does not fit without it or it at " \
        "least halves" in " ".join(helps["gradient_checkpointing"].split())
    TrainConfig(batch_size=None, gradient_checkpointing=None).validate()
    with pytest.raises(UserError, match="--memory-limit-gb must be positive"):
        TrainConfig(memory_limit_gb=0.0).validate()


# -- the train stage -------------------------------------------------------------------------
def _run_on(model: Path, name: str, n: int = 6) -> None:
    """A run on ``model`` with ``n`` short samples rendered with its tokenizer (no sampling:
    the model may have no weights)."""
    from transformers import AutoTokenizer

    from ssd_local.app.runs import Run

    tok = AutoTokenizer.from_pretrained(str(model))
    rows = []
    for i in range(n):
        prompt = f"Write a function number {i}."
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        rows.append({"prompt_id": f"p{i}", "sample_index": 0, "prompt": prompt,
                     "prompt_text": text, "completion": "def f(x):\n    return x + 1\n",
                     "finish_reason": "stop", "degenerate": None, "looped": False})
    with Run.create_or_open(name, {"ref": str(model),
                                   "identity": f"local:{model.resolve()}"}) as run:
        run.append_samples(rows)
        run.set_stage("sample", "done", summary={"samples": n})


def test_train_prints_its_estimate_and_records_it(tiny_model):
    from ssd_local.app.runs import Run

    pytest.importorskip("torch")
    _run_on(tiny_model, "est")
    r = run_cli("train", "est", "--max-steps", "1", "--effective-batch", "4", "--no-fuse")
    assert r.returncode == 0, r.stderr
    err = " ".join(r.stderr.split())  # rich wraps the lines at 80 columns
    assert "memory: estimate" in err and "micro-batch 4, gradient checkpointing off" in err
    assert err.index("memory: estimate") < err.index("train (LoRA")  # before the first step
    stage = Run.load("est").manifest["stages"]["train"]
    assert stage["memory"]["batch_size"] == 4 and stage["memory"]["estimate_gib"]["total"] > 0
    assert Run.load("est").manifest["config"]["train"]["batch_size"] is None  # as asked


def test_a_4b_model_that_cannot_fit_is_refused_before_loading(tiny_model, tmp_path):
    """A config.json of Qwen3-4B's shape next to a tokenizer, and no weights at all: the
    refusal must come before anything tries to load them."""
    import shutil

    pytest.importorskip("torch")
    big = tmp_path / "qwen3-4b-shape"
    shutil.copytree(tiny_model, big, ignore=shutil.ignore_patterns("*.safetensors"))
    (big / "config.json").write_text(json.dumps({**QWEN3_4B,
                                                 "architectures": ["Qwen3ForCausalLM"]}))
    _run_on(big, "big")
    r = run_cli("train", "big", "--max-steps", "1", "--memory-limit-gb", "8")
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training needs about"), err
    assert "train a smaller model" in err[0] and "Traceback" not in r.stderr
    from ssd_local.app.runs import Run

    assert Run.load("big").stage_state("train") == "pending"


# -- the TUI form ---------------------------------------------------------------------------
def test_the_form_shows_the_estimate_as_the_knobs_change(tiny_model):
    import asyncio

    pytest.importorskip("textual")
    from test_tui import SIZE, fill, text_of
    from textual.widgets import Input

    from ssd_local.app.inventory import Hardware
    from ssd_local.tui.app import create_app

    hw = Hardware("Linux x86_64", 2, 16.0, "CPU", "torch (CPU)")

    async def go():
        app = create_app(hw)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            await pilot.pause()
            note = lambda: " ".join(text_of(app.screen.query_one("#memory-note")).split())  # noqa: E731,E501
            model = app.screen.query_one("#model", Input)
            model.value = str(tiny_model)  # set, not typed: each keystroke re-estimates
            await pilot.pause()
            assert "memory: estimate" in note() and "of 16.0 GiB RAM" in note()
            assert "micro-batch 4, gradient checkpointing off" in note()
            await fill(pilot, "#train-batch_size", "2")
            assert "micro-batch 2, gradient checkpointing off" in note()
            await fill(pilot, "#train-memory_limit_gb", "0.1")
            assert "training needs about" in note() and "set by --memory-limit-gb" in note()
            model.value = "Org/not-downloaded-4b"
            await pilot.pause()
            assert "the estimate needs the model" in note()

    asyncio.run(go())


# -- the estimate against measured peaks ---------------------------------------------------
@pytest.fixture(scope="session")
def smol_slice(tmp_path_factory, tiny_model):
    """SmolLM2-135M's shape with 6 of its 30 layers, random weights (the tiny model's
    tokenizer: training reads only its pad and end ids)."""
    torch = pytest.importorskip("torch")
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("slice") / "smollm2-slice"
    shutil.copytree(tiny_model, out, ignore=shutil.ignore_patterns("*.safetensors",
                                                                   "config.json"))
    cfg = {k: v for k, v in SMOLLM2.items() if k not in ("model_type", "dtype")}
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**cfg, "num_hidden_layers": 6, "pad_token_id": 0,
                                    "eos_token_id": 2})).save_pretrained(out)
    return out


def _measure(folder: Path, backend: str, batch: int, tokens: int, responses: int,
             ck: bool) -> tuple[float, float, str]:
    """(measured peak, estimate, device kind) of one training step, in a fresh process."""
    spec = json.dumps({"folder": str(folder), "backend": backend, "batch": batch,
                       "tokens": tokens, "responses": responses, "ck": ck})
    r = subprocess.run([sys.executable, __file__, spec], capture_output=True, text=True,
                       cwd=ROOT, timeout=600, env=dict(os.environ, TOKENIZERS_PARALLELISM="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    device = TrainDevice(backend, got["kind"], 0, "", got["act_bytes"], got["weight_bytes"])
    est = M.estimate(M.read_dims(folder), shape(batch, tokens, ck, dropout=True,
                                                responses=batch * responses), device)
    return got["peak"], est.total, got["kind"]


# the last: 2,552 tokens in flight, whose MiB-sized activations glibc would keep resident
# after they are freed (1.6x the estimate) unless the trainer has it return them
CASES = [("tiny", 4, 256, 64, False), ("slice", 2, 512, 128, False),
         ("slice", 2, 512, 128, True), ("slice", 4, 256, 192, False),
         ("slice", 4, 638, 400, True)]


@pytest.mark.parametrize("backend", ["torch", pytest.param("mlx", marks=pytest.mark.slow)])
def test_estimate_against_measured_peaks(backend, tiny_model, smol_slice):
    """Peak RSS on CPU (max_memory_allocated on CUDA) of one training step per case, each
    in its own process, within ``MARGIN`` of the estimate."""
    if backend == "mlx":
        pytest.importorskip("mlx_lm")
        cases = [("slice", 2, 256, 64, False), ("slice", 2, 256, 64, True)]  # MLX CPU: slow
    else:
        cases = CASES
    rows = []
    for model, batch, tokens, responses, ck in cases:
        folder = tiny_model if model == "tiny" else smol_slice
        peak, est, kind = _measure(folder, backend, batch, tokens, responses, ck)
        rows.append((model, batch, tokens, ck, peak / 2**20, est / 2**20, peak / est))
        print(f"{backend}/{kind} {model} {batch}x{tokens} checkpointing={ck}: measured "
              f"{peak / 2**20:.0f} MiB, estimate {est / 2**20:.0f} MiB, ratio {peak / est:.2f}")
    for *case, ratio in rows:
        assert MARGIN[0] <= ratio <= MARGIN[1], (case, ratio)


@pytest.mark.gpu
def test_estimate_against_cuda_peaks(smol_slice):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    for batch, tokens, responses, ck in ((4, 512, 128, False), (4, 512, 128, True)):
        peak, est, kind = _measure(smol_slice, "torch", batch, tokens, responses, ck)
        assert kind == "cuda" and MARGIN[0] <= peak / est <= MARGIN[1], (batch, ck, peak, est)


def _child(spec: dict) -> None:
    """One training step with explicit settings (no plan), then its peak: the resident
    memory of this process on CPU, the trainer's reported max_memory_allocated on CUDA,
    MLX's peak memory on Metal."""
    import random
    import tempfile

    from ssd_local.backends.base import IGNORE, Example
    from ssd_local.backends.registry import open_trainer
    from ssd_local.backends.train_common import peak_rss_mb

    folder, n, t, resp = Path(spec["folder"]), spec["batch"], spec["tokens"], spec["responses"]
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    rng = random.Random(0)
    examples = []
    for _ in range(n):
        ids = [rng.randrange(3, vocab) for _ in range(t)]
        examples.append(Example(ids, [IGNORE] * (t - resp) + ids[t - resp:]))
    cfg = TrainConfig(max_steps=1, batch_size=n, effective_batch=n, val_fraction=0.0,
                      gradient_checkpointing=spec["ck"], backend=spec["backend"],
                      compact_memory=True)  # the live memory, what the estimate counts
    trainer = open_trainer(spec["backend"])
    device = trainer.device()
    reports = []
    trainer.train(folder, Path(tempfile.mkdtemp()), cfg, examples, [], on_step=reports.append)
    # on CPU the whole process's peak (VmHWM: ru_maxrss would count the pytest parent
    # this process was forked from), saving the checkpoint and adapter included
    peak = (reports[-1].peak_mem_mb if device.kind != "cpu" else peak_rss_mb()) * 2**20
    print(json.dumps({"peak": peak, "kind": device.kind, "act_bytes": device.act_bytes,
                      "weight_bytes": device.weight_bytes}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _child(json.loads(sys.argv[1]))
