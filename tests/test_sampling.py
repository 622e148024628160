"""The sampling stage on the torch engine with a tiny model built here, and on the real
llama.cpp engine with the offline SmolLM2-135M."""

import json
import threading

import pytest

from ssd_local import events as ev
from ssd_local.config import SampleConfig
from ssd_local.errors import Cancelled, UserError
from ssd_local.app.sampling import derive_seed, sample
from conftest import run_cli

REQUIRED = {"prompt_id", "sample_index", "prompt", "prompt_text", "completion",
            "prompt_tokens", "completion_tokens", "finish_reason", "degenerate", "looped",
            "has_code", "seed", "engine"}


def test_torch_engine_samples_resumes_and_extends(tiny_model):
    got = []
    cfg = SampleConfig(limit=3, max_new_tokens=8, batch_size=2, samples_per_prompt=2)
    run, summary = sample(str(tiny_model), cfg, "t", on_event=got.append)
    rows = run.read_samples()
    assert summary.samples == 6 and len(rows) == 6
    assert REQUIRED <= set(rows[0])
    assert {(r["prompt_id"], r["sample_index"]) for r in rows} == {
        (p, i) for p in ("b001", "b002", "b003") for i in (0, 1)}
    assert all(r["engine"] == "torch" and 1 <= r["completion_tokens"] <= 8 for r in rows)
    # the chat template rendered once, with the paper's system message
    assert rows[0]["prompt_text"].startswith("<|im_start|>system\nYou are an expert Python")
    assert rows[0]["prompt_text"].endswith("<|im_start|>assistant\n")
    assert any(isinstance(e, ev.Progress) and e.done == 6 for e in got)
    man = json.loads((run.path / "manifest.json").read_text())
    assert man["stages"]["sample"]["state"] == "done"
    assert man["artefacts"]["samples.jsonl"]["lines"] == 6
    assert man["config"]["sample"]["temperature"] == 1.0  # the generic preset

    # same command: nothing to do; a larger --limit extends the run without duplicates
    run, summary = sample(str(tiny_model), cfg, "t")
    assert summary.samples == 6
    run, summary = sample(str(tiny_model), SampleConfig(limit=5, max_new_tokens=8,
                                                        batch_size=2, samples_per_prompt=2), "t")
    keys = [(r["prompt_id"], r["sample_index"]) for r in run.read_samples()]
    assert len(keys) == len(set(keys)) == 10


def test_changed_decoding_is_refused_on_resume(tiny_model):
    sample(str(tiny_model), SampleConfig(limit=1, max_new_tokens=4), "t")
    with pytest.raises(UserError, match="--top-p"):
        sample(str(tiny_model), SampleConfig(limit=1, max_new_tokens=4, top_p=0.5), "t")


def test_cancel_leaves_a_resumable_run(tiny_model):
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, ev.SampleWritten):
            cancel.set()

    cfg = SampleConfig(limit=6, max_new_tokens=4, batch_size=1)
    with pytest.raises(Cancelled):
        sample(str(tiny_model), cfg, "t", on_event=on_event, cancel=cancel)
    from ssd_local.app.runs import Run

    run = Run.load("t")
    assert run.stage_state("sample") == "cancelled"
    assert 1 <= len(run.read_samples()) < 6
    run, summary = sample(str(tiny_model), cfg, "t")
    assert summary.samples == 6 and run.stage_state("sample") == "done"


def test_seeds_are_per_sample_and_stable(tiny_model):
    """The same command in two separate processes (each with its own hash randomisation)
    gives the same samples; every (prompt, sample) has its own seed."""
    from ssd_local.app.runs import Run

    for name in ("pa", "pb"):
        r = run_cli("sample", str(tiny_model), "--limit", "3", "--samples-per-prompt", "2",
                    "--max-new-tokens", "8", "--run", name, env={"PYTHONHASHSEED": "random"})
        assert r.returncode == 0, r.stderr
    a, b = (sorted((x["prompt_id"], x["sample_index"], x["seed"], x["completion"])
                   for x in Run.load(name).read_samples()) for name in ("pa", "pb"))
    assert a == b and len(a) == 6
    assert len({derive_seed(0, "b001", i) for i in range(50)}) == 50
    assert derive_seed(1, "b001", 0) != derive_seed(0, "b001", 0)


def test_torch_decoding_order_and_no_model_defaults_leak(tiny_model):
    """The engine passes only our settings: temperature, then top-k, then top-p."""
    from transformers import GenerationConfig

    from ssd_local.backends.base import GenerationRequest, SamplingParams
    from ssd_local.backends.torch import TorchEngine

    # a model whose own generation_config asks for penalties must not get them
    GenerationConfig(do_sample=True, repetition_penalty=1.7, min_p=0.3).save_pretrained(
        tiny_model)
    try:
        eng = TorchEngine(tiny_model)
        calls = []
        orig = eng.model._get_logits_processor

        def spy(*args, **kwargs):
            procs = orig(*args, **kwargs)
            calls.append([type(p).__name__ for p in procs])
            return procs

        eng.model._get_logits_processor = spy
        text = eng.render([{"role": "user", "content": "hi"}])
        out = list(eng.generate([GenerationRequest(("a", 0), text, 1)],
                                SamplingParams(0.9, 5, 0.7, 3), batch_size=1))
        assert out[0].completion_tokens <= 3
        names = [n for n in calls[0] if n.endswith("LogitsWarper")]
        assert names == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
        assert not any("Repetition" in n or "MinP" in n for n in calls[0])
    finally:
        (tiny_model / "generation_config.json").unlink()


@pytest.mark.slow
def test_llamacpp_batched_greedy_picks_what_the_model_alone_ranks_first(smollm2):
    """Continuous batching must not change what a sequence sees. Each token picked greedily
    in a batch of 4 (prompts prefilled together, slots reused) must be the top token when
    the same text is scored alone by llama-cpp-python's high-level API, up to float noise
    between batch shapes (a near-tie within 0.25 logits)."""
    import numpy as np
    import llama_cpp

    from ssd_local.app import prompts
    from ssd_local.backends.base import GenerationRequest, SamplingParams
    from ssd_local.backends.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(smollm2, n_threads=2)
    reqs = [GenerationRequest((p.id, 0), eng.render(prompts.messages(p, "Answer in Python.")), 7)
            for p in prompts.load("builtin", limit=6)]
    out = list(eng.generate(reqs, SamplingParams(0.0, 0, 1.0, 12), batch_size=4))
    assert sorted(r.key for r in out) == sorted(r.key for r in reqs)
    eng.close()
    llm = llama_cpp.Llama(str(smollm2), n_ctx=1024, logits_all=True, verbose=False,
                          n_threads=2)
    by_key = {r.key: r for r in reqs}
    for res in out:
        prompt = llm.tokenize(by_key[res.key].prompt_text.encode(), add_bos=False, special=True)
        gen = list(res.token_ids)
        llm.reset()
        llm.eval(prompt + gen)
        logits = np.array(llm.scores[len(prompt) - 1:len(prompt) + len(gen) - 1])
        picked = logits[np.arange(len(gen)), gen]
        gap = logits.max(axis=1) - picked
        assert np.all(gap <= 0.25), (res, gap)


@pytest.mark.slow
def test_llamacpp_sampling_is_seeded_per_sample(smollm2):
    from ssd_local.backends.base import GenerationRequest, SamplingParams
    from ssd_local.backends.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(smollm2, n_threads=2)
    text = eng.render([{"role": "user", "content": "Write a Python function that adds."}])
    params = SamplingParams(1.0, 20, 0.9, 16)
    a = [r.text for r in eng.generate([GenerationRequest(("a", 0), text, 11)], params)]
    b = [r.text for r in eng.generate([GenerationRequest(("a", 0), text, 11)], params)]
    c = [r.text for r in eng.generate([GenerationRequest(("a", 0), text, 12)], params)]
    eng.close()
    assert a == b
    assert a != c
