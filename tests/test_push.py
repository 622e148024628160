"""`ssd-local push RUN ORG/NAME` through huggingface-hub's real upload path against the local
Hub stand-in (repo creation, YAML validation, preupload, LFS batch/PUT/verify, the NDJSON
commit): the files and the card's front matter arrive as expected, and each user mistake
ends in one line with exit code 2."""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from conftest import run_cli
from hubfake import FakeHub
from runfake import make_run

pytest.importorskip("gguf")
TOKEN = "hf_test_write_token"

COMPARE = {  # the shape compare writes (app/evaluation/compare.py), plus a field it may add
    "run": "r", "benchmark": "humaneval", "problems": 164, "samples_per_problem": 5,
    "ks": [1, 5], "base_grid": False,
    "rows": [
        {"model": "base", "role": "sweep", "temperature": 0.7, "top_k": 20, "top_p": 0.8,
         "distillation": False, "pass@1": 0.30, "pass@5": 0.45,
         "ci95": {"pass@1": [0.25, 0.35], "pass@5": [0.40, 0.50]}, "no_code": 1},
        {"model": "base", "role": "distillation settings", "temperature": 1.0, "top_k": 20,
         "top_p": 0.8, "distillation": True, "pass@1": 0.26, "pass@5": 0.44,
         "ci95": {"pass@1": [0.21, 0.31], "pass@5": [0.39, 0.49]}, "no_code": 2},
        {"model": "tuned", "role": "sweep", "temperature": 1.1, "top_k": 20, "top_p": 0.8,
         "distillation": False, "pass@1": 0.36, "pass@5": 0.52,
         "ci95": {"pass@1": [0.31, 0.41], "pass@5": [0.47, 0.57]}, "no_code": 0}],
    "base_best": {"model": "base", "temperature": 0.7, "top_k": 20, "top_p": 0.8},
    "tuned_best": {"model": "tuned", "temperature": 1.1, "top_k": 20, "top_p": 0.8},
    "difference": {"pass@1": {"value": 0.06, "ci95": [0.01, 0.11]}},
    "verdict": "SSD helps: the tuned model's best beats the base model's best by +6.0 "
               "points pass@1 (95% interval +1.0 to +11.0).",
    "plot": "compare-humaneval.png", "measured": None, "a_field_from_later": {"x": 1}}


def _env(hub_url: str, tmp_path, **extra) -> dict:
    env = {"HF_ENDPOINT": hub_url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


def test_push_uploads_ggufs_merged_and_the_card(tmp_path):
    root = make_run("r", quants=("q4_k_m", "q8_0"))
    (root / "evals").mkdir()
    (root / "evals" / "compare-humaneval.json").write_text(json.dumps(COMPARE))
    with FakeHub({}, upload_root=tmp_path / "hub", token=TOKEN) as hub:
        r = run_cli("push", "r", "acme/r-ssd", "--merged", "--private",
                    env=_env(hub.url, tmp_path), timeout=120)
        assert r.returncode == 0, r.stderr
        repo = tmp_path / "hub" / "acme" / "r-ssd"
        assert hub.created["acme/r-ssd"]["visibility"] == "private"
        (commit,) = hub.commits
        assert commit["files"] == {"r-q4_k_m.gguf": "lfsFile", "r-q8_0.gguf": "lfsFile",
                                   "config.json": "file", "model.safetensors": "lfsFile",
                                   "tokenizer.json": "file", "README.md": "file"}
        for name in ("r-q4_k_m.gguf", "r-q8_0.gguf"):
            assert (repo / name).read_bytes() == (root / "gguf" / name).read_bytes()
        assert (repo / "model.safetensors").read_bytes() == \
            (root / "merged" / "model.safetensors").read_bytes()
        assert len(hub.lfs_uploads) == 3
        assert any(x.startswith("POST /api/validate-yaml") for x in hub.requests)
        assert any(x.endswith(".git/info/lfs/objects/batch") for x in hub.requests)
    card = (repo / "README.md").read_text()
    assert card == (root / "hub" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model_relation"] == "finetune"
    assert meta["library_name"] == "transformers"  # --merged: transformers loads the repo
    assert set(meta["tags"]) >= {"gguf", "code", "ssd", "self-distillation", "llama"}
    body = " ".join(card.split())
    for said in ("| T_train / top-k / top-p | 1 / 20 / 0.8", "24 (1 per prompt",
                 "LoRA rank 16, alpha 32", "peak lr 0.0002", "6 steps",
                 "final train loss 0.4933", "torch 2.13.0",
                 "temperature 1.1, top-k 20, top-p 0.8", "the generic preset's T_eval",
                 "| tuned **(best)** | 1.1 | 20 | 0.8 | 36.0% [31.0, 41.0] | 52.0% [47.0, 57.0] |",
                 "| base at the distillation settings | 1 | 20 | 0.8 | 26.0%",
                 "Tuned best minus base best: pass@1 +6.0 points [+1.0, +11.0]",
                 COMPARE["verdict"], "hf download acme/r-ssd r-q4_k_m.gguf"):
        assert said in body, said
    assert "ssd-local/r" not in body and "pushed 6 files" in r.stdout


def test_push_gguf_only_of_a_hub_model_names_its_base(tmp_path):
    model = {"ref": "acme/tiny-coder", "kind": "hf", "name": "tiny-coder", "source": "hub",
             "repo_id": "acme/tiny-coder", "identity": "hub:acme/tiny-coder",
             "path": "/hf/hub/models--acme--tiny-coder/snapshots/abc"}
    make_run("r", quants=("q4_k_m", "q8_0"), model=model)
    with FakeHub({}, upload_root=tmp_path / "hub") as hub:
        r = run_cli("push", "r", "me/coder", "--quant", "q8_0", env=_env(hub.url, tmp_path),
                    timeout=120)
        assert r.returncode == 0, r.stderr
        assert hub.created["me/coder"].get("visibility") in (None, "public")
        assert set(hub.commits[0]["files"]) == {"r-q8_0.gguf", "README.md"}
    meta = _front_matter((tmp_path / "hub" / "me" / "coder" / "README.md").read_text())
    assert meta["base_model"] == "acme/tiny-coder" and meta["library_name"] == "gguf"


def test_a_local_base_gets_no_base_model_id():
    from ssd_local.app.modelcard import base_model

    rid, words = base_model({"kind": "gguf", "path": "/models/mine.gguf", "name": "mine",
                             "source": "local"})
    assert rid is None and "local GGUF file `mine.gguf`" in words
    rid, _ = base_model({"kind": "hf", "source": "local", "name": "Qwen3-4B",
                         "path": "/c/hub/models--Qwen--Qwen3-4B/snapshots/0123/"})
    assert rid == "Qwen/Qwen3-4B"


@pytest.mark.parametrize("bad", ["no-slash", "a/b/c", "acme/bad name", "acme/x--y", "/x"])
def test_bad_repo_ids_are_refused_before_any_request(bad):
    from ssd_local.app.publish import check_repo_id
    from ssd_local.errors import UserError

    with pytest.raises(UserError, match="is not a Hub repo id; use ORG/NAME"):
        check_repo_id(bad)
    assert check_repo_id("acme/r-ssd.v2_1") == "acme/r-ssd.v2_1"


def _one_error(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_mistakes_are_one_line(tmp_path):
    make_run("bare", quants=())
    make_run("r")
    with FakeHub({}, upload_root=tmp_path / "hub", token=TOKEN) as hub:
        env = _env(hub.url, tmp_path)
        assert "has no GGUF yet; run `ssd-local export bare` first" in _one_error(
            run_cli("push", "bare", "acme/x", env=env, timeout=120))
        assert "'a/b/c' is not a Hub repo id; use ORG/NAME" in _one_error(
            run_cli("push", "r", "a/b/c", env=env, timeout=120))
        assert "has no q8_0 GGUF; make it with `ssd-local export r --quant q8_0`" in \
            _one_error(run_cli("push", "r", "acme/x", "--quant", "q8_0", env=env, timeout=120))
        err = _one_error(run_cli("push", "r", "acme/x", "--private",
                                 env=_env(hub.url, tmp_path, HF_TOKEN=None), timeout=120))
        assert "401 Unauthorized" in err and "a private repo needs a token" in err
        assert "HF_TOKEN" in err and not hub.commits
        err = _one_error(run_cli("push", "r", "acme/x", timeout=120,
                                 env=_env(hub.url, tmp_path, HF_HUB_OFFLINE="1")))
        assert "HF_HUB_OFFLINE is set" in err
    down = f"http://127.0.0.1:{_closed_port()}"
    err = _one_error(run_cli("push", "r", "acme/x", env=_env(down, tmp_path), timeout=120))
    assert f"cannot reach the Hugging Face Hub at {down}" in err


def test_push_twice_sends_large_files_once(tmp_path):
    make_run("r")
    with FakeHub({}, upload_root=tmp_path / "hub", token=TOKEN) as hub:
        for _ in range(2):
            r = run_cli("push", "r", "acme/r", env=_env(hub.url, tmp_path), timeout=120)
            assert r.returncode == 0, r.stderr
        assert len(hub.commits) == 2 and len(hub.lfs_uploads) == 1  # the LFS object: once
    assert sorted(os.listdir(tmp_path / "hub" / "acme" / "r")) == ["README.md",
                                                                 "r-q4_k_m.gguf"]
