"""The controlled SSD reproduction's task, its hand-wired base model and the pipeline that
runs the product on them (design v1: tests/reproduction.md). Used by
tests/test_reproduction.py and bench/reproduction.py.

The task: answers are real Python programs made of one-token fragments, with FORK positions
(two fine branches, skewed head 0.9 / 0.1) and LOCK positions (one right token, 0.98, and a
0.02 tail of 60 ``name(`` distractors that make the program a SyntaxError). The base model is
a 1-layer Llama wired as that exact bigram model. The pipeline is the product's: ``sample``
at T_train with truncation, ``train`` (full fine-tune, fused into RUN/merged), the one
generation loop on the torch engine, the sandbox, ``scoring``'s pass@k and paired
bootstrap, and the lens (``lens.compare``) for the tail mass at lock positions.

Every number here was fixed in the design before the first run; do not tune them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# -- the designed distributions (design v1, section 3) ----------------------------------------
F = 3  # fork positions per program
LOCK_CORRECT = 0.98  # probability of the one right token at every lock
N_DISTRACTORS = 60  # tail tokens shared by all locks
TAIL_DECAY = 30.0  # tail weights exp(-j / TAIL_DECAY), j = 0..59
FORK_HEAD = (0.9, 0.1)  # branch A, branch B at every fork (no tail at forks)
REST_LOGIT = -40.0  # every token not designed at a context (log-prob)

# -- the experiment (design v1, sections 4 and 5) ---------------------------------------------
T_TRAIN, TOP_K, TOP_P = 1.1, 20, 0.95
BASE_T = (0.6, 0.9, 1.1, 1.2, 1.25, 1.3, 1.4)
TUNED_T = (1.0, 1.3, 1.6, 1.9, 2.2, 2.6, 3.0)
N_TRAIN_PROMPTS = 1024
N_PROBLEMS = 256
N_SAMPLES = 20
KS = (1, 5, 10)
K_MAIN = 10
MAX_NEW = 16
TRAIN = dict(full=True, lr=1e-2, max_steps=120, effective_batch=32, batch_size=32)
SAMPLE_BATCH = 1024  # sequences per torch batch when sampling the SSD data (as in v1)
GEN_BATCH = 2048  # ... when evaluating (as in v1: the engine seeds each batch once)
WORKERS = 2  # sandbox processes

# Program fragments. Every string is one token and appears at one place only, so the
# previous token identifies the position (a bigram model is exact on this text).
FENCE_OPEN = "```python\n"
INIT = "x0 = 7\n"
FENCE_CLOSE = "```"
PRINT = f"print(x{F})\n"


def lock_line(i: int) -> str:
    """The lock fragment before fork i (i = 1..F)."""
    return f"x{i} = x{i - 1} * 100 + "


def branch(i: int, b: int) -> str:
    """Fork i's branch b: 0 (A) or 1 (B)."""
    return f"{(10, 50)[b] + i}\n"


DISTRACTOR_NAMES = (
    "abs all any ascii bin bool bytes callable chr complex delattr dict dir divmod enumerate "
    "eval exec filter float format frozenset getattr globals hasattr hash hex id input int "
    "isinstance issubclass iter len list locals map max memoryview min next object oct open "
    "ord pow range repr reversed round set setattr slice sorted str sum super tuple type vars "
    "zip breakpoint compile").split()[:N_DISTRACTORS]
# "name(" never closes: any program holding one is a SyntaxError wherever it sits.
DISTRACTORS = [n + "(" for n in DISTRACTOR_NAMES]
_DISTRACTOR_RE = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(DISTRACTOR_NAMES) + r")\(")

SPECIALS = ["<|pad|>", "<|unk|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD, UNK, EOS, SYSTEM, USER, ASSISTANT = SPECIALS
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
HIDDEN = 64


def has_distractor(text: str) -> bool:
    """Whether an answer holds a distractor token ("int(" inside "print(" is not one)."""
    return _DISTRACTOR_RE.search(text) is not None


def program_tokens() -> list[str]:
    toks = [FENCE_OPEN, INIT]
    for i in range(1, F + 1):
        toks += [lock_line(i), branch(i, 0), branch(i, 1)]
    return toks + [PRINT, FENCE_CLOSE]


VOCAB = SPECIALS + program_tokens() + DISTRACTORS
COMBOS = list(itertools.product((0, 1), repeat=F))  # the 2^F hidden branch sequences


def tail_weights() -> np.ndarray:
    w = np.exp(-np.arange(N_DISTRACTORS) / TAIL_DECAY)
    return w / w.sum()


@dataclass(frozen=True)
class Context:
    """A context token (its own embedding axis) and the designed next-token distribution."""

    token: str
    kind: str  # lock | fork | after-distractor
    next: dict[str, float] = field(default_factory=dict)
    correct: str | None = None  # locks: the one right token


def contexts() -> list[Context]:
    tail = tail_weights()

    def lock(prev: str, correct: str) -> Context:
        nxt = {correct: LOCK_CORRECT}
        nxt.update({d: (1 - LOCK_CORRECT) * w for d, w in zip(DISTRACTORS, tail)})
        return Context(prev, "lock", nxt, correct)

    out = [lock(ASSISTANT, FENCE_OPEN), lock(FENCE_OPEN, INIT), lock(INIT, lock_line(1))]
    for i in range(1, F + 1):
        out.append(Context(lock_line(i), "fork", {branch(i, 0): FORK_HEAD[0],
                                                   branch(i, 1): FORK_HEAD[1]}))
        nxt = lock_line(i + 1) if i < F else PRINT
        out += [lock(branch(i, 0), nxt), lock(branch(i, 1), nxt)]
    out += [lock(PRINT, FENCE_CLOSE), lock(FENCE_CLOSE, EOS)]
    out.append(Context("<distractor>", "after-distractor", {EOS: 1.0}))
    return out


def logprob_vector(ctx: Context) -> np.ndarray:
    v = np.full(len(VOCAB), REST_LOGIT)
    for t, p in ctx.next.items():
        v[VOCAB.index(t)] = math.log(p)
    return v


# -- programs, problems, prompts ----------------------------------------------------------------
def program_text(choices: tuple[int, ...]) -> str:
    s = FENCE_OPEN + INIT
    for i, b in enumerate(choices, 1):
        s += lock_line(i) + branch(i, b)
    return s + PRINT + FENCE_CLOSE


def expected_output(choices: tuple[int, ...]) -> str:
    x = 7
    for i, b in enumerate(choices, 1):
        x = x * 100 + (10, 50)[b] + i
    return f"{x}\n"


def problems(n: int = N_PROBLEMS, prefix: str = "test") -> list[dict[str, Any]]:
    """n stdio problems (empty input), hidden branch sequences balanced over the 2^F."""
    assert n % len(COMBOS) == 0
    out = []
    for j in range(n):
        h = COMBOS[j % len(COMBOS)]
        out.append({"task_id": f"{prefix}-{j:04d}",
                    "question": f"Configuration {prefix}-{j:04d}: build the register value "
                                "x0..x3 of this configuration and print the final value.",
                    "tests": [{"input": "", "output": expected_output(h)}],
                    "hidden": list(h)})
    return out


def train_prompts(n: int = N_TRAIN_PROMPTS) -> list[dict[str, str]]:
    """The SSD prompts: never used as test problems."""
    return [{"id": f"train-{j:04d}",
             "prompt": f"Configuration train-{j:04d}: build the register value x0..x3 of "
                       "this configuration and print the final value."} for j in range(n)]


# -- the tokenizer and the model ----------------------------------------------------------------
def build_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    # the program fragments as literals (longest first), the distractors by their shape
    alternation = "|".join(re.escape(t) for t in sorted(program_tokens(), key=len,
                                                        reverse=True)) + r"|[a-z]+\("
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(alternation), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, bos_token=None,
                                   additional_special_tokens=[SYSTEM, USER, ASSISTANT],
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(out: Path) -> Path:
    """A 1-layer Llama wired as the designed bigram model: attention and MLP outputs are
    zero, each context token has its own embedding axis (the distractors share one), the
    untied output layer holds the designed log-probabilities over the RMSNorm gain. Checks
    that the tokenizer round-trips every program and every (fragment, distractor) pair."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    assert len(tok) == len(VOCAB) and all(tok.convert_tokens_to_ids(t) == i
                                          for i, t in enumerate(VOCAB))
    for h in COMBOS:
        ids = tok(program_text(h) + EOS, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == program_text(h)
    for a in program_tokens():
        for d in DISTRACTORS:
            got = tok.convert_ids_to_tokens(tok(a + d, add_special_tokens=False)["input_ids"])
            assert got == [a, d], (a, d)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=HIDDEN, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=False, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    ctxs = contexts()
    assert len(ctxs) <= HIDDEN
    scale = 1.0 / math.sqrt(1.0 / HIDDEN + cfg.rms_norm_eps)  # RMSNorm of a one-hot axis
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for axis, ctx in enumerate(ctxs):
            model.lm_head.weight[:, axis] = torch.tensor(logprob_vector(ctx),
                                                         dtype=torch.float32) / scale
            for t in DISTRACTORS if ctx.token == "<distractor>" else [ctx.token]:
                model.model.embed_tokens.weight[VOCAB.index(t), axis] = 1.0
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# -- the cross-check: the decoding transform and exact expected pass@k ---------------------------
def decode_dist(logits: np.ndarray, T: float, top_k: int = TOP_K, top_p: float = TOP_P
                ) -> tuple[np.ndarray, np.ndarray]:
    """(tempered p_T, tempered-truncated q) at one position, as transformers applies it:
    temperature, top-k (ties with the k-th value kept), top-p (ascending cumulative mass
    <= 1 - top_p removed, the largest always kept). The prototype's own arithmetic, kept
    as a cross-check of the lens and of the sampled pass@k."""
    s = np.asarray(logits, dtype=np.float64) / T
    pT = np.exp(s - s.max())
    pT /= pT.sum()
    keep = np.ones_like(s, dtype=bool)
    if top_k:
        keep &= s >= np.sort(s)[::-1][min(top_k, len(s)) - 1]
    if top_p < 1.0:
        s2 = np.where(keep, s, -np.inf)
        order = np.argsort(s2, kind="stable")
        ps = np.exp(s2[order] - s2.max())
        ps /= ps.sum()
        rm = np.cumsum(ps) <= 1 - top_p
        rm[-1] = False
        keep[order[rm]] = False
    q = np.where(keep, pT, 0.0)
    return pT, q / q.sum()


@dataclass(frozen=True)
class Row:
    """One position of a canonical program: the context token, the next token, the kind
    the design gave the context, and the model's logits there."""

    prev: str
    next: str
    kind: str
    logits: np.ndarray


def model_rows(folder: Path, prompt_text: str) -> dict[tuple[int, ...], list[Row]]:
    """Next-token logits along each passing program (and its end token) after
    ``prompt_text``, from the product's lens scorer (same tokenization as the lens)."""
    from ssd_local.backends.registry import open_scorer

    kinds = {c.token: c.kind for c in contexts()}
    scorer = open_scorer("hf", folder)
    try:
        p_ids = scorer.encode(prompt_text)
        out = {}
        for h in COMBOS:
            ids = p_ids + scorer.encode(program_text(h)) + [scorer.eos_id]
            lg = np.concatenate([r for _, r in scorer.logits(ids, len(p_ids), chunk=512)])
            out[h] = [Row(VOCAB[ids[j - 1]], VOCAB[ids[j]], kinds[VOCAB[ids[j - 1]]],
                          lg[j - len(p_ids)].astype(np.float64))
                      for j in range(len(p_ids), len(ids))]
        return out
    finally:
        scorer.close()


def exact_pass(rows: dict[tuple[int, ...], list[Row]], T: float, ks=KS) -> dict[int, float]:
    """Expected pass@k from a model's own next-token distributions: for hidden sequence h,
    q_h = P(one sample is h's program up to the closing fence); the unbiased estimator's
    expectation is mean_h 1 - (1 - q_h)^k for any n >= k."""
    q = []
    for rs in rows.values():
        p = 1.0
        for r in rs:
            if r.prev == FENCE_CLOSE:
                break  # what follows the closed block is not judged
            p *= decode_dist(r.logits, T)[1][VOCAB.index(r.next)]
        q.append(p)
    return {k: float(np.mean([1 - (1 - x) ** k for x in q])) for k in ks}


def own_lock_tail(rows: dict[tuple[int, ...], list[Row]], T: float) -> float:
    """The prototype's mean tail mass (1 - kept) at the design's lock positions."""
    tails = []
    for rs in rows.values():
        for r in rs:
            if r.kind == "lock":
                pT, q = decode_dist(r.logits, T)
                tails.append(1.0 - float(pT[q > 0].sum()))
    return float(np.mean(tails))


def fork_p_b(rows: dict[tuple[int, ...], list[Row]], T: float) -> float:
    """Mean decoded probability of branch B at the forks."""
    out = []
    for rs in rows.values():
        for r in rs:
            if r.kind == "fork":
                i = int(r.prev[1:r.prev.index(" ")])
                out.append(decode_dist(r.logits, T)[1][VOCAB.index(branch(i, 1))])
    return float(np.mean(out))


# -- the pipeline ---------------------------------------------------------------------------------
Log = Callable[[str], None]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def samples_digest(samples: list[dict[str, Any]]) -> str:
    """sha256 of the SSD data: its (prompt id, sample index, completion) triples, sorted."""
    return _digest(sorted((s["prompt_id"], s["sample_index"], s["completion"])
                          for s in samples))


def generate_cells(engine: Any, label: str, temps: tuple[float, ...], probs: list[Any],
                   seed: int) -> tuple[dict[float, dict[str, list[str]]], str]:
    """Answers of one model at each temperature: ``{T: {task_id: [n completions]}}``, and
    the rendered prompt of the first problem. The product's generation loop on its torch
    engine, with the product's system prompt, as ``evaluate`` does; cell T's seed is
    ``derive_seed(seed, "label@T", 0)``, each answer's then derived by the loop."""
    from ssd_local.app.generation import Item, derive_seed, generate
    from ssd_local.app.prompts import chat
    from ssd_local.backends.base import SamplingParams
    from ssd_local.config import SYSTEM_PROMPT

    items = [Item((p.task_id, i), chat(p.prompt, SYSTEM_PROMPT))
             for p in probs for i in range(N_SAMPLES)]
    prompt_text: dict[str, str] = {}
    out = {}
    for T in temps:
        comps: dict[str, list[str]] = {p.task_id: [""] * N_SAMPLES for p in probs}

        def write(res: Any, text: str, comps: dict[str, list[str]] = comps) -> None:
            comps[res.key[0]][res.key[1]] = res.text
            prompt_text.setdefault(res.key[0], text)

        generate(engine, items, SamplingParams(T, TOP_K, TOP_P, MAX_NEW),
                 seed=derive_seed(seed, f"{label}@{T}", 0), in_flight=GEN_BATCH,
                 stage="eval", total=len(items), write=write, on_event=lambda e: None)
        out[T] = comps
    return out, prompt_text[probs[0].task_id]


def regenerate_samples(engine: Any, run: Any) -> list[dict[str, Any]]:
    """The SSD data generated again by the same loop, engine and settings as ``sample``
    (same prompts in the same order, same seeds, same batch): (prompt id, index,
    prompt text, completion) records, to compare with the run's samples."""
    from ssd_local.app.generation import Item, generate
    from ssd_local.app.prompts import chat
    from ssd_local.backends.base import SamplingParams

    cfg = run.manifest["config"]["sample"]
    items = [Item((p["id"], 0), chat(p["prompt"], cfg["system_prompt"]))
             for p in train_prompts()]
    out: list[dict[str, Any]] = []
    generate(engine, items, SamplingParams(cfg["temperature"], cfg["top_k"], cfg["top_p"],
                                           cfg["max_new_tokens"]),
             seed=cfg["seed"], in_flight=cfg["batch_size"], stage="sample", total=len(items),
             write=lambda res, text: out.append({
                 "prompt_id": res.key[0], "sample_index": res.key[1], "prompt_text": text,
                 "completion": res.text}), on_event=lambda e: None)
    return out


class Judge:
    """Verdicts of distinct completions for every hidden sequence, from the product's
    sandbox (``scoring.grade``): each new distinct completion runs once against a problem
    of the first sequence; those whose program ran to the end (passed or failed) then run
    against one problem of every other sequence. A crash, or no code, cannot depend on the
    expected output (stdin is empty), so it fails them all. Calls may come in several
    batches (each completion is judged once); the verdicts do not depend on the batching."""

    def __init__(self, probs: list[Any], hidden: dict[str, tuple[int, ...]]):
        self.probe: dict[tuple[int, ...], Any] = {}
        for p in probs:
            self.probe.setdefault(hidden[p.task_id], p)
        self.verdict: dict[str, dict[tuple[int, ...], bool]] = {}
        self.status: dict[str, int] = {}
        self.ran = 0
        self.jobs = 0

    def __call__(self, cells: dict[float, dict[str, list[str]]]) -> None:
        from ssd_local.app.evaluation import scoring

        new = sorted({c for comps in cells.values() for cs in comps.values() for c in cs}
                     - set(self.verdict))
        if not new:
            return
        first, probe = COMBOS[0], self.probe
        g1 = scoring.grade([probe[first]], {probe[first].task_id: new}, chat=True,
                           workers=WORKERS)
        ran = []
        for c, g in zip(new, g1):
            self.verdict[c] = {h: False for h in COMBOS}
            self.verdict[c][first] = g.passed
            key = g.error or g.status
            self.status[key] = self.status.get(key, 0) + 1
            if g.status in ("passed", "failed"):
                ran.append(c)
        rest = [h for h in COMBOS if h != first]
        if ran:
            g2 = scoring.grade([probe[h] for h in rest], {probe[h].task_id: ran for h in rest},
                               chat=True, workers=WORKERS)
            by_tid = {probe[h].task_id: h for h in rest}
            for g in g2:
                self.verdict[ran[g.index]][by_tid[g.task_id]] = g.passed
        self.ran += len(ran)
        self.jobs += len(new) + len(ran) * len(rest)

    def stats(self) -> dict[str, Any]:
        return {"distinct_completions": len(self.verdict), "ran_to_end": self.ran,
                "sandbox_jobs": self.jobs, "statuses": dict(sorted(self.status.items()))}


def lens_comparison(base: Path, tuned: Path, prompt_text: str, T: float) -> dict[str, Any]:
    """The product's lens on the 8 passing programs (each ending on the end token), base
    against tuned under (T, top-k 20, top-p 0.95): the lock/fork counts (the product's rule,
    on the base model), the mean tail mass at its locks and the head entropy at its forks."""
    from ssd_local.app import lens
    from ssd_local.config import Decoding

    texts = [lens.Text(prompt_text, program_text(h), id="".join(map(str, h)), stop=True)
             for h in COMBOS]
    s = lens.compare(base, tuned, texts, Decoding(T, TOP_K, TOP_P)).summary
    return {"T": T, "labels": s["labels"],
            "base": s["base"]["tail_mass_at_lock"], "tuned": s["tuned"]["tail_mass_at_lock"],
            "difference": s["difference"]["tail_mass_at_lock"],
            "fork_entropy": [s["base"]["head_entropy_at_fork"],
                             s["tuned"]["head_entropy_at_fork"]]}


def pass_rates(cells: dict[str, dict[float, dict[str, list[str]]]], judge: Judge,
               hidden: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """pass@k per (model, T) with bootstrap intervals (``scoring``), each model's best T by
    pass@10 (ties: the lower T), and tuned-best minus base-best by a paired bootstrap."""
    from ssd_local.app.evaluation import scoring

    rows: dict[str, Any] = {}
    per_problem: dict[tuple[str, float, int], dict[str, float]] = {}
    for label, by_t in cells.items():
        for T, comps in by_t.items():
            nc = {tid: (len(cs), sum(judge.verdict[c][hidden[tid]] for c in cs))
                  for tid, cs in comps.items()}
            row: dict[str, Any] = {"model": label, "T": T}
            for k in KS:
                pp = scoring.per_problem_pass(nc, k)
                est = scoring.bootstrap(list(pp.values()), seed=0)
                row[f"pass@{k}"], row[f"ci@{k}"] = est.value, [est.low, est.high]
                per_problem[(label, T, k)] = pp
            row["distinct"] = len({c for cs in comps.values() for c in cs})
            row["with_distractor"] = sum(has_distractor(c) for cs in comps.values()
                                         for c in cs) / (N_PROBLEMS * N_SAMPLES)
            rows[f"{label}@{T}"] = row
    best = {label: max(by_t, key=lambda T: (rows[f"{label}@{T}"][f"pass@{K_MAIN}"], -T))
            for label, by_t in cells.items()}
    diff = {f"pass@{k}": scoring.paired_difference(per_problem[("base", best["base"], k)],
                                                   per_problem[("tuned", best["tuned"], k)],
                                                   seed=0).to_dict() for k in KS}
    return {"cells": rows, "best": best, "tuned_best_minus_base_best": diff}


LENS_AT = ("base_best", "T=1.0")  # the claim's decodings (design, claim 2)
LENS_ALSO = ("T_train", "tuned_best")  # reported only
# The design's negative controls (section 9): each changes exactly one thing.
CONTROLS = {"none": {}, "no-truncation": {"top_k": 0, "top_p": 1.0},  # in the SSD sampling
            "paper-lr": {"lr": 5e-6}}  # in training: the paper's full fine-tuning rate


def reproduce(work: Path, seed: int = 0, log: Log = lambda msg: None,
              lens_at: tuple[str, ...] = LENS_AT, control: str = "none") -> dict[str, Any]:
    """Run design v1 in ``work`` (SSD_LOCAL_HOME must point at a fresh folder) and return
    every number (``table`` prints them). Torch runs on one thread meanwhile (the design's
    timing check: on tiny batches a second thread only adds contention), so the sandbox
    judging the base model's answers in a second thread has the other core. ``control``:
    one of ``CONTROLS``, the design's negative controls (the claims should then fail)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reproduce(work, seed, log, lens_at, control)
    finally:
        torch.set_num_threads(threads)


def _reproduce(work: Path, seed: int, log: Log, lens_at: tuple[str, ...], control: str
               ) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from ssd_local.app.evaluation.problems import problem_from_dict
    from ssd_local.app.runs import Run
    from ssd_local.app.sampling import sample
    from ssd_local.app.training import train
    from ssd_local.backends.registry import open_sampler
    from ssd_local.config import SampleConfig, TrainConfig

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0, marks = time.monotonic(), {}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - t0, 1)
        log(f"[{marks[name]:6.1f}s] {name}")

    # 1. the task and the base model
    work.mkdir(parents=True, exist_ok=True)
    base = build_model(work / "base")
    prompts_file = work / "train.jsonl"
    prompts_file.write_text("".join(json.dumps(r) + "\n" for r in train_prompts()))
    raw = problems()
    probs = [problem_from_dict({k: v for k, v in r.items() if k != "hidden"}) for r in raw]
    hidden = {r["task_id"]: tuple(r["hidden"]) for r in raw}
    mark("built the task and the base model")

    # 2. SSD: sample the frozen base at T_train with truncation, train, fuse
    change = CONTROLS[control]
    run, summ = sample(str(base), SampleConfig(
        prompts=str(prompts_file), temperature=T_TRAIN, top_k=change.get("top_k", TOP_K),
        top_p=change.get("top_p", TOP_P), max_new_tokens=MAX_NEW, samples_per_prompt=1,
        batch_size=SAMPLE_BATCH, seed=seed, backend="torch"), "ssd")
    samples = run.read_samples()
    mark(f"sampled {len(samples)} answers")
    tres = train("ssd", TrainConfig(seed=seed, save_every=TRAIN["max_steps"],
                                    eval_every=TRAIN["max_steps"],
                                    **{**TRAIN, "lr": change.get("lr", TRAIN["lr"])}))
    tuned = Run.load("ssd").path / "merged"
    mark(f"trained {tres.steps} steps and fused")

    # 3. both models over their temperature grids; the sandbox judges the base model's
    # answers while the tuned model generates
    judge = Judge(probs, hidden)
    cells: dict[str, dict[float, dict[str, list[str]]]] = {}
    with ThreadPoolExecutor(1) as pool:
        engine = open_sampler("torch", base)
        try:
            again = regenerate_samples(engine, run)
            cells["base"], prompt_text = generate_cells(engine, "base", BASE_T, probs, seed)
        finally:
            engine.close()
        judging = pool.submit(judge, cells["base"])
        mark("generated the base model's answers (and the SSD data again)")
        engine = open_sampler("torch", tuned)
        try:
            cells["tuned"], _ = generate_cells(engine, "tuned", TUNED_T, probs, seed)
        finally:
            engine.close()
        mark("generated the tuned model's answers")
        judging.result()
    judge(cells["tuned"])
    mark("judged them")

    # 4. pass@k per cell, each model's best temperature, the paired bootstrap
    key = lambda s: (s["prompt_id"], s["sample_index"], s["prompt_text"],  # noqa: E731
                     s["completion"])
    res: dict[str, Any] = {
        "design": "v1", "seed": seed, "control": control, "judge": judge.stats(),
        "sampling": {"samples": summ.samples, "with_distractor": sum(
            has_distractor(s["completion"]) for s in samples), "fork_B_share": float(np.mean(
                [s["completion"].count(f"{50 + i}\n") for s in samples
                 for i in range(1, F + 1)])),
            "digest": samples_digest(samples),
            "regenerated_equal": sorted(map(key, samples)) == sorted(map(key, again))},
        "training": {"steps": tres.steps, "train_loss": tres.train_loss,
                     "val_loss": tres.val_loss},
        **pass_rates(cells, judge, hidden)}
    best = res["best"]

    # 5. the lens (the product's), and the prototype's arithmetic as a cross-check
    at = {"base_best": best["base"], "T=1.0": 1.0, "T_train": T_TRAIN,
          "tuned_best": best["tuned"]}
    res["lens"] = {name: lens_comparison(base, tuned, prompt_text, at[name])
                   for name in lens_at}
    rows = {"base": model_rows(base, prompt_text), "tuned": model_rows(tuned, prompt_text)}
    for row in res["cells"].values():
        r = rows[row["model"]]
        row["exact"] = {f"pass@{k}": v for k, v in exact_pass(r, row["T"]).items()}
        row["own_lock_tail"] = own_lock_tail(r, row["T"])
        row["fork_p_B"] = fork_p_b(r, row["T"])
    for L in res["lens"].values():
        L["own"] = [own_lock_tail(rows["base"], L["T"]), own_lock_tail(rows["tuned"], L["T"])]
    mark("measured the lens")
    res["digest"] = _digest(_rounded(res))
    res["times_s"] = marks
    return res


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 10)
    if isinstance(x, dict):
        return {str(k): _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def table(res: dict[str, Any]) -> str:
    """The results as text: a row per (model, T), the paired differences, the lens."""
    out = ["model  T      pass@1  pass@5  pass@10 [95% CI]        exact@10 | lock tail "
           "(own)  fork p_B | distinct w/distractor"]
    for r in res["cells"].values():
        mark = " *" if r["T"] == res["best"][r["model"]] else "  "
        out.append(f"{r['model']:6s} {r['T']:4.2f}{mark} {r['pass@1']:6.3f}  {r['pass@5']:6.3f}"
                   f"  {r['pass@10']:6.3f} [{r['ci@10'][0]:.3f}, {r['ci@10'][1]:.3f}]  "
                   f"{r['exact']['pass@10']:6.3f}   | {r['own_lock_tail']:.2e}  "
                   f"{r['fork_p_B']:.4f}  | {r['distinct']:5d}    {r['with_distractor']:.4f}")
    out.append("(* = the model's best T by pass@10; exact@10 = expected pass@10 from the "
               "model's own next-token distributions; lock tail: the prototype's arithmetic)")
    b = res["best"]
    out.append(f"\ntuned-best (T_eval={b['tuned']}) minus base-best (T={b['base']}), paired "
               f"bootstrap over {N_PROBLEMS} problems:")
    for k, e in res["tuned_best_minus_base_best"].items():
        out.append(f"  {k:8s} {e['value']:+.4f}  95% CI [{e['ci95'][0]:+.4f}, "
                   f"{e['ci95'][1]:+.4f}]")
    out.append(f"\nlens (ssd_local.app.lens.compare) at lock positions, top-k {TOP_K}, top-p "
               f"{TOP_P}:")
    for name, L in res["lens"].items():
        d, (fb, ft) = L["difference"], L["fork_entropy"]
        locks = (f"tail mass base {L['base']:.3e} -> tuned {L['tuned']:.3e} (diff "
                 f"{d['value']:+.3e}, 95% CI [{d['ci95'][0]:+.2e}, {d['ci95'][1]:+.2e}])"
                 if L["base"] is not None else "no lock positions by the rule")
        forks = f"fork head entropy {fb:.4f} -> {ft:.4f}" if fb is not None else "no forks"
        out.append(f"  {name:10s} T={L['T']:<4}: {locks}; {forks}; positions {L['labels']}; "
                   f"own lock tail {L['own'][0]:.3e} -> {L['own'][1]:.3e}")
    s, t, j = res["sampling"], res["training"], res["judge"]
    out.append(f"\nSSD data: {s['samples']} samples, {s['with_distractor']} with a distractor, "
               f"fork B share {s['fork_B_share']:.4f}, digest {s['digest'][:16]}; training: "
               f"{t['steps']} steps, loss {t['train_loss']:.4f}; sandbox: {j['sandbox_jobs']} "
               f"jobs, statuses {j['statuses']}")
    out.append(f"sampling again gave the same SSD data: {s['regenerated_equal']}")
    out.append(f"digest {res['digest']}")
    return "\n".join(out)
