"""Model references: embedded, local GGUF, local HF folder, and the hub path against a local
stand-in for the Hugging Face HTTP API (the real huggingface-hub client does the work)."""

import json
import os
import subprocess
import sys

import pytest

from hubfake import FakeHub
from ssd_local.errors import UserError
from ssd_local.app.models import resolve

RESOLVE = ("import json, sys; from ssd_local.app.models import resolve; "
           "from ssd_local.errors import UserError\n"
           "events = []\n"
           "try:\n"
           "    m = resolve(sys.argv[1], on_event=events.append)\n"
           "    print(json.dumps({'kind': m.kind, 'path': str(m.path), 'name': m.name, "
           "'identity': m.identity, 'progress': sum(type(e).__name__ == 'Progress' "
           "for e in events)}))\n"
           "except UserError as e:\n"
           "    print(json.dumps({'error': str(e)}))\n")


def _resolve_via_hub(hub, ref, tmp_path, **env):
    e = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"),
             HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
    e.update(env)
    out = subprocess.run([sys.executable, "-c", RESOLVE, ref], env=e, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_embedded_default(smollm2):
    m = resolve("smollm2-135m")
    assert (m.kind, m.source, m.path) == ("gguf", "embedded", smollm2)
    assert m.identity == "embedded:smollm2-135m"


def test_local_gguf_and_folder(tmp_path, tiny_model):
    g = tmp_path / "x.gguf"
    g.write_bytes(b"GGUF")
    assert resolve(str(g)).kind == "gguf"
    m = resolve(str(tiny_model))
    assert (m.kind, m.name) == ("hf", "tiny-llama")


def test_unknown_references_fail_with_the_choices(tmp_path):
    with pytest.raises(UserError, match="pass smollm2-135m, a .gguf file"):
        resolve("./missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve(str(tmp_path / "empty"))


def test_hub_download_into_hf_cache_with_progress(tmp_path, tiny_model):
    with FakeHub({"acme/tiny-coder": tiny_model}) as hub:
        got = _resolve_via_hub(hub, "acme/tiny-coder", tmp_path)
        assert got["kind"] == "hf" and got["name"] == "tiny-coder"
        assert got["path"].startswith(str(tmp_path / "hf" / "hub" / "models--acme--tiny-coder"))
        assert got["progress"] > 0
        assert got["identity"] == "hub:acme/tiny-coder"
        # the cache is reused offline (HF_HUB_OFFLINE honoured by huggingface-hub)
        again = _resolve_via_hub(hub, "acme/tiny-coder", tmp_path, HF_HUB_OFFLINE="1")
        assert again["path"] == got["path"]


def test_hub_unknown_repo_and_gguf_only_repo(tmp_path):
    ggufs = tmp_path / "ggufrepo"
    ggufs.mkdir()
    (ggufs / "m-Q4_K_M.gguf").write_bytes(b"GGUF")
    with FakeHub({"acme/m-GGUF": ggufs}) as hub:
        err = _resolve_via_hub(hub, "no-such-org/no-such-model", tmp_path)["error"]
        assert "was not found on the Hugging Face Hub" in err
        err = _resolve_via_hub(hub, "acme/m-GGUF", tmp_path)["error"]
        assert "acme/m-GGUF:m-Q4_K_M.gguf" in err
        got = _resolve_via_hub(hub, "acme/m-GGUF:m-Q4_K_M.gguf", tmp_path)
        assert got["kind"] == "gguf" and got["path"].endswith("m-Q4_K_M.gguf")


def test_hub_offline_without_cache_names_the_fix(tmp_path):
    with FakeHub({}) as hub:
        err = _resolve_via_hub(hub, "acme/absent", tmp_path, HF_HUB_OFFLINE="1")["error"]
    assert "not in the HF cache" in err


@pytest.mark.slow
def test_gguf_converted_once_to_a_transformers_folder(smollm2):
    from ssd_local.app.models import ensure_hf_folder

    m = resolve("smollm2-135m")
    folder = ensure_hf_folder(m)
    assert (folder / "config.json").exists() and (folder / ".complete").exists()
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg
    mtime = (folder / "config.json").stat().st_mtime
    assert ensure_hf_folder(m) == folder
    assert (folder / "config.json").stat().st_mtime == mtime  # cached, not redone
