"""The lens: its arithmetic on hand-made distributions (kept/tail mass, entropies and their
split, survivors, the lock/fork rule), its truncation sets against the product's own
sampler chains (llama.cpp and transformers), the GGUF path on SmolLM2 against
llama-cpp-python's high-level scores, the HF path on the tiny model against a plain
forward pass, ``ssd-local lens RUN`` end to end on a tiny run, and the TUI view."""

from __future__ import annotations

import asyncio
import ctypes
import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from ssd_local.app import lens
from ssd_local.config import Decoding, LensConfig, SampleConfig, TrainConfig
from ssd_local.errors import UserError

P = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
PROMPT = ("<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>\n"
          "<|im_start|>assistant\n")
ANSWERS = ["```python\ndef add(a, b):\n    return a + b\n```",
           "Here:\n```python\ndef add(x, y):\n    return x + y\n```\nIt adds them."]


def stats(p, d: Decoding, target: int = 0) -> lens.Stats:
    return lens.position_stats(np.log(np.asarray(p, dtype=np.float64))[None, :], d, [target])


def H(q) -> float:
    q = np.asarray(q, dtype=np.float64)
    q = q[q > 0] / q.sum()
    return float(-(q * np.log(q)).sum())


# -- the arithmetic on hand-made distributions ------------------------------------------------
@pytest.mark.parametrize("d, head, kept", [
    # top-p alone: 0.5 + 0.25 = 0.75 >= 0.7, two tokens survive
    (Decoding(1.0, 0, 0.7), [0.5, 0.25], 0.75),
    # top-k alone: the three most likely
    (Decoding(1.0, 3, 1.0), [0.5, 0.25, 0.15], 0.90),
    # top-k, then top-p on the top-k renormalised: 0.5/0.9 + 0.25/0.9 = 0.833 >= 0.8, so
    # two survive (top-p 0.8 on the full distribution would have kept three)
    (Decoding(1.0, 3, 0.8), [0.5, 0.25], 0.75),
    (Decoding(1.0, 0, 0.8), [0.5, 0.25, 0.15], 0.90),
    # no truncation: everything survives
    (Decoding(1.0, 0, 1.0), list(P), 1.0),
])
def test_kept_tail_entropy_survivors_by_hand(d, head, kept):
    s = stats(P, d)
    tail = [x for x in P if x not in head]
    assert s.survivors[0] == len(head)
    assert s.kept[0] == pytest.approx(kept, abs=1e-12)
    assert s.tail[0] == pytest.approx(1 - kept, abs=1e-12)
    assert s.entropy[0] == pytest.approx(H(head), abs=1e-12)
    assert s.tail_entropy[0] == pytest.approx(H(tail) if tail else 0.0, abs=1e-9)
    assert s.full_entropy[0] == pytest.approx(H(P), abs=1e-12)
    assert s.top[0] == pytest.approx(0.5) and s.logprob[0] == pytest.approx(np.log(0.5))
    assert s.second[0] == pytest.approx(0.25 if len(head) > 1 else 0.0)


def test_temperature_comes_first():
    """T=2 flattens p to sqrt(p) (normalised) before truncation: then the top-p 0.7 set
    needs three tokens, and the kept mass is measured on the tempered distribution."""
    q = np.sqrt(P) / np.sqrt(P).sum()  # p^(1/T), T = 2
    s = stats(P, Decoding(2.0, 0, 0.7))
    n = int(np.argmax(np.cumsum(q) >= 0.7)) + 1
    assert n == 3 and s.survivors[0] == 3
    assert s.kept[0] == pytest.approx(q[:3].sum())
    assert s.entropy[0] == pytest.approx(H(q[:3]))
    assert s.top[0] == pytest.approx(q[0])
    assert s.logprob[0] == pytest.approx(np.log(0.5))  # the text's log-prob stays at T = 1
    assert stats(P, Decoding(0.5, 0, 0.7)).survivors[0] == 1  # p^2: 0.25/0.3408 >= 0.7


def test_entropy_splits_into_head_and_tail():
    """H = h2(kept) + kept * H(head) + (1 - kept) * H(tail), on random rows and decodings."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (64, 300))
    for d in (Decoding(1.0, 20, 0.8), Decoding(1.6, 20, 0.8), Decoding(0.7, 0, 0.95),
              Decoding(1.1, 5, 1.0)):
        s = lens.position_stats(logits, d, rng.integers(0, 300, 64))
        k = s.kept
        assert np.allclose(s.full_entropy, lens.h2(k) + k * s.entropy + (1 - k) * s.tail_entropy,
                           atol=1e-9)
        assert np.all(s.survivors <= (d.top_k or 300)) and np.all((k > 0) & (k <= 1))


def test_in_set_says_whether_the_token_could_be_sampled():
    s = lens.position_stats(np.log(np.tile(P, (3, 1))), Decoding(1.0, 0, 0.7), [0, 1, 2])
    assert s.in_set.tolist() == [True, True, False]


def test_lock_fork_rule():
    cfg = LensConfig()
    rows = [[0.95, 0.03, 0.02],  # lock: one right token, a tail remains
            [0.91, 0.09],  # lock; a lock is never also a fork
            [0.6, 0.3, 0.1],  # fork: 0.6 and 0.3 both in the top-p 0.8 set
            [0.85, 0.1, 0.05],  # neither: top-p 0.8 keeps the first token alone
            [0.05] * 20,  # neither: spread thin, no token reaches 0.1
            [0.85, 0.15]]  # neither at T=1 (the set is one token); see below at T=0.5
    d = Decoding(1.0, 20, 0.8)
    got = [lens.LABELS[int(lens.label(stats(r, d), cfg)[0])] for r in rows]
    assert got == ["lock", "lock", "fork", "neither", "neither", "neither"]
    # labels read the tempered distribution: at T=0.5, 0.85^2/(0.85^2+0.15^2) = 0.97, a lock
    assert lens.label(stats([0.85, 0.15], Decoding(0.5, 20, 0.8)), cfg)[0] == lens.LOCK
    # a wider top-p lets the second token in: then it is a fork
    assert lens.label(stats([0.8, 0.12, 0.08], Decoding(1.0, 20, 0.9)), cfg)[0] == lens.FORK
    with pytest.raises(UserError, match="must not exceed 1"):
        LensConfig(lock_threshold=0.9, fork_threshold=0.2).validate()


def test_summary_compares_at_the_base_models_positions():
    """Tail mass at locks and head entropy at forks are read at the base model's labels;
    the differences come with a bootstrap interval over texts."""
    d, cfg = Decoding(1.0, 20, 0.8), LensConfig()
    base_rows = np.log(np.array([[0.92, 0.05, 0.03], [0.6, 0.3, 0.1], [0.5, 0.35, 0.15]]))
    tuned_rows = np.log(np.array([[0.98, 0.01, 0.01], [0.55, 0.35, 0.1], [0.34, 0.33, 0.33]]))
    base = [lens.position_stats(base_rows, d, [0, 0, 0])] * 3
    tuned = [lens.position_stats(tuned_rows, d, [0, 0, 0])] * 3
    labels = [lens.label(b, cfg) for b in base]
    s = lens.summarise(base, tuned, labels, cfg)
    assert s["labels"] == {"lock": 3, "fork": 6, "neither": 0} and s["positions"] == 9
    assert s["base"]["tail_mass_at_lock"] == pytest.approx(0.08)
    assert s["tuned"]["tail_mass_at_lock"] == pytest.approx(0.02)
    diff = s["difference"]["tail_mass_at_lock"]
    assert diff["value"] == pytest.approx(-0.06) and diff["ci95"] == pytest.approx([-0.06] * 2)
    h_base = (H([0.6, 0.3]) + H([0.5, 0.35])) / 2
    assert s["base"]["head_entropy_at_fork"] == pytest.approx(h_base)
    assert s["tuned"]["own_labels"]["lock"] == 3


# -- the same sets as the product's own sampler chains ----------------------------------------
DECODINGS = [Decoding(t, k, p) for t in (0.7, 1.0, 1.6) for k in (0, 5, 20)
             for p in (0.5, 0.8, 0.95, 1.0)]


def test_truncation_sets_equal_llama_cpps_chain():
    """For fixed logit vectors, the set the lens keeps is the set left after
    ``make_sampler``'s chain (temp -> top_k -> top_p -> dist) is applied in llama.cpp."""
    lc = pytest.importorskip("llama_cpp")
    from ssd_local.backends.base import SamplingParams
    from ssd_local.backends.llamacpp import make_sampler

    lc.llama_backend_init()
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 3, (12, 400)).astype(np.float32)
    for d in DECODINGS:
        _, cand, n_keep = lens.truncate(rows, d)
        for row, c, n in zip(rows, cand, n_keep):
            data = (lc.llama_token_data * len(row))(
                *[lc.llama_token_data(i, float(x), 0.0) for i, x in enumerate(row)])
            arr = lc.llama_token_data_array(data=data, size=len(row), selected=-1,
                                            sorted=False)
            chain = make_sampler(SamplingParams(d.temperature, d.top_k, d.top_p, 1), 7)
            lc.llama_sampler_apply(chain, ctypes.byref(arr))
            lc.llama_sampler_free(chain)
            assert {data[i].id for i in range(arr.size)} == set(c[:n].tolist()), d


def test_truncation_sets_equal_transformers_warpers():
    """And the set transformers' Temperature -> TopK -> TopP warpers leave finite (the
    order ``TorchEngine``'s GenerationConfig gets)."""
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (LogitsProcessorList,
                                                        TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    rng = np.random.default_rng(2)
    rows = rng.normal(0, 3, (12, 400)).astype(np.float32)
    for d in DECODINGS:
        chain = LogitsProcessorList([TemperatureLogitsWarper(d.temperature)]
                                    + ([TopKLogitsWarper(d.top_k)] if d.top_k else [])
                                    + ([TopPLogitsWarper(d.top_p)] if d.top_p < 1 else []))
        out = chain(torch.zeros(len(rows), 1, dtype=torch.long), torch.from_numpy(rows))
        _, cand, n_keep = lens.truncate(rows, d)
        for o, c, n in zip(out, cand, n_keep):
            assert set(torch.isfinite(o).nonzero()[:, 0].tolist()) == set(c[:n].tolist()), d


# -- the engines ----------------------------------------------------------------------------
def test_gguf_rows_align_and_match_llama_cpp_high_level(smollm2):
    """Rows are the completion's tokens (the end token too where the answer stopped), in
    chunks smaller than the texts; log-probs equal llama-cpp-python's ``Llama(logits_all=
    True)`` scores with the sampler's flash-attention setting. Stated tolerance: 1e-3 nats
    (measured: 0, the same kernels)."""
    import llama_cpp

    texts = [lens.Text(PROMPT, ANSWERS[0], "a", stop=True), lens.Text(PROMPT, ANSWERS[1], "b")]
    m = lens.measure(smollm2, texts, Decoding(1.0, 20, 0.8), cfg=LensConfig(chunk=8))
    assert m.engine == "llamacpp" and m.n_vocab == 49152
    llm = llama_cpp.Llama(str(smollm2), logits_all=True, n_ctx=256, flash_attn=True,
                          verbose=False)
    for t, e, s, pieces in zip(texts, m.texts, m.stats, m.pieces):
        want = llm.tokenize(t.completion.encode(), add_bos=False, special=True)
        assert e.prompt == llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        assert e.completion == want + ([llm.token_eos()] if t.stop else [])
        assert len(s) == len(e.completion) == len(pieces)
        assert "".join(pieces).startswith(t.completion)
        ids = e.prompt + e.completion
        llm.reset()
        llm.eval(ids)
        sc = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
        sc = sc - sc.max(axis=1, keepdims=True)
        ref = sc - np.log(np.exp(sc).sum(axis=1, keepdims=True))
        first = len(e.prompt)
        got = ref[np.arange(first - 1, len(ids) - 1), e.completion]
        assert np.abs(got - s.logprob).max() < 1e-3
        assert s.in_set.mean() > 0.5 and np.all(s.survivors <= 20)


def test_hf_path_matches_a_plain_forward_pass(tiny_model):
    """The torch scorer, in chunks of 4 tokens with the KV cache, gives a full forward
    pass's log-probs (tolerance 1e-4), and a model compared with itself differs by 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [("<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n",
              "def add(a, b):\n    return a + b\n"), ("x", "print(1)")]
    d = Decoding(1.0, 20, 0.8)
    m = lens.measure(tiny_model, texts, d, cfg=LensConfig(chunk=4))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    for (prompt, completion), e, s in zip(texts, m.texts, m.stats):
        assert e.completion == tok(completion, add_special_tokens=False)["input_ids"]
        ids = e.prompt + e.completion
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        ref = torch.log_softmax(logits, -1)[len(e.prompt) - 1:-1].numpy()
        assert np.abs(ref[np.arange(len(e.completion)), e.completion] - s.logprob).max() < 1e-4
        full = lens.position_stats(logits[len(e.prompt) - 1:-1].numpy(), d, e.completion)
        assert np.allclose(full.kept, s.kept, atol=1e-4)
    cmp = lens.compare(tiny_model, tiny_model, texts, d, cfg=LensConfig(chunk=4))
    assert all(v["value"] in (None, 0.0) for v in cmp.summary["difference"].values())
    assert cmp.summary["positions"] == sum(len(e.completion) for e in m.texts)
    cut = lens.measure(tiny_model, texts[:1], d, cfg=LensConfig(max_tokens=5))
    assert len(cut.stats[0]) == 5 and cut.texts[0].cut and not m.texts[0].cut
    assert np.allclose(cut.stats[0].kept, m.stats[0].kept[:5])
    import threading

    from ssd_local.errors import Cancelled

    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match=r"lens stopped after \d+ of"):
        lens.measure(tiny_model, texts, d, cfg=LensConfig(chunk=4), cancel=stop)


def test_compare_refuses_another_tokenizer(tiny_model, smol_tokenizer_model):
    with pytest.raises(UserError, match="does not share the base model's tokenizer"):
        lens.compare(tiny_model, smol_tokenizer_model, [("x", "print(1)")],
                     Decoding(1.0, 20, 0.8))


# -- end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    """A tiny run (4 samples, 2 LoRA steps, merged), made once and copied into each
    test's SSD_LOCAL_HOME."""
    from ssd_local.app.runs import Run, runs_root
    from ssd_local.app.sampling import sample
    from ssd_local.app.training import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSD_LOCAL_HOME", str(tmp_path_factory.mktemp("lens-home")))
        sample(str(tiny_model), SampleConfig(limit=4, max_new_tokens=12), "lr")
        f = Run.load("lr").samples_path
        rows = [dict(json.loads(x), completion=a, degenerate=None, finish_reason="stop")
                for x, a in zip(f.read_text().splitlines(), ANSWERS * 2)]
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        train("lr", TrainConfig(max_steps=2, effective_batch=2, batch_size=2, lr=1e-2))
        return runs_root() / "lr"


def copy_in(src) -> str:
    from ssd_local.app.runs import runs_root

    shutil.copytree(src, runs_root() / src.name, ignore=shutil.ignore_patterns(".lock"))
    return src.name


def test_lens_cli_end_to_end(tiny_run):
    run = copy_in(tiny_run)
    r = run_cli("lens", run, "--limit", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    said = " ".join(r.stdout.split())  # rich wraps at 80 columns in a pipe
    assert "tail mass at lock positions" in said
    assert "the run's T_train, from its recorded sample config" in said
    from ssd_local.app.runs import runs_root

    out = runs_root() / run / "lens"
    assert (out / "lens-samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = json.loads((out / "lens-samples.json").read_text())
    assert rec["decoding"] == {"temperature": 1.0, "top_k": 20, "top_p": 0.8,
                               "source": "the run's T_train, from its recorded sample config"}
    assert rec["models"]["base"]["engine"] == rec["models"]["tuned"]["engine"] == "torch"
    assert rec["models"]["tuned"]["path"].endswith("merged")
    assert len(rec["texts"]) == 3 and rec["summary"]["texts"] == 3
    for t in rec["texts"]:
        n = len(t["tokens"])
        assert n > 0 and len(t["pieces"]) == len(t["label"]) == n
        for side in ("base", "tuned"):
            assert all(len(t[side][c]) == n for c in ("kept", "tail", "entropy", "survivors"))
    assert sum(len(t["tokens"]) for t in rec["texts"]) == rec["summary"]["positions"]
    assert "lock = the top token" in rec["rule"]
    from ssd_local.app.lens.report import run_lens

    with pytest.raises(UserError, match="has no evaluation 'nope'; it has: none"):
        run_lens(run, LensConfig(source="eval:nope"))


def test_lens_view_runs_the_lens_as_a_job_and_shows_it(tiny_run):
    from textual.widgets import Button, DataTable, Input, Select, Static

    from ssd_local.app.inventory import Hardware
    from ssd_local.tui.app import create_app
    from test_tui import text_of, wait_for

    run = copy_in(tiny_run)

    async def go():
        app = create_app(Hardware("Linux x86_64", 2, 16.0, "CPU", "torch (CPU)"))
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("l")
            await pilot.pause()
            screen = app.screen
            assert type(screen).__name__ == "LensScreen"
            assert screen.query_one("#lens-table", DataTable).row_count == 0
            screen.query_one("#lens-run", Select).value = run
            screen.query_one("#lens-limit", Input).value = "2"
            await pilot.pause()
            screen.query_one("#run-lens", Button).press()
            await pilot.pause()
            job = app.job
            assert job is not None and job.kind == "lens" and job.run == run
            await wait_for(pilot, lambda: not job.active, 120)
            assert job.state == "done", job.error
            assert job.view.stage("lens tuned").state == "done"
            await pilot.press("l")
            await pilot.pause()
            screen = app.screen
            table = screen.query_one("#lens-table", DataTable)
            assert table.row_count == 6
            assert str(table.get_row_at(1)[0]) == "tail mass at locks"
            chart = screen.query_one("#lens-chart")
            assert [s.label for s in chart.series] == ["base tail mass", "tuned tail mass"]
            assert "def add" in text_of(screen.query_one("#lens-strip", Static))
            assert "rule: on the base model" in text_of(screen.query_one("#lens-note", Static))

    asyncio.run(go())
