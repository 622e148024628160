"""The CLI end to end in subprocesses, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli


def _one_error_line(stderr):
    """The user sees exactly one error line and no traceback; returns that line."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _samples(home, run):
    p = home / "runs" / run / "samples.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@pytest.mark.slow
def test_done_when_sample_four(ssd_home, smollm2):
    r = run_cli("sample", "smollm2-135m", "--prompts", "builtin", "--limit", "4",
                "--max-new-tokens", "32", "--run", "r1")
    assert r.returncode == 0, r.stderr
    rows = _samples(ssd_home, "r1")
    assert len(rows) == 4
    assert (ssd_home / "runs" / "r1" / "manifest.json").exists()
    assert all(x["completion_tokens"] <= 32 and x["engine"] == "llamacpp" for x in rows)
    assert "sampled 4 samples" in r.stdout
    listing = run_cli("runs")
    assert "r1" in listing.stdout and "done" in listing.stdout


@pytest.mark.slow
def test_kill_dash_nine_then_rerun_has_no_duplicates_and_no_loss(ssd_home, smollm2):
    args = ["sample", "smollm2-135m", "--prompts", "builtin", "--limit", "12",
            "--max-new-tokens", "32", "--batch-size", "2", "--run", "r1"]
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    deadline = time.time() + 300
    while len(_samples(ssd_home, "r1")) < 2 and time.time() < deadline:
        assert proc.poll() is None, "sampling ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(_samples(ssd_home, "r1"))
    assert 2 <= killed_at < 12
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    keys = [(x["prompt_id"], x["sample_index"]) for x in _samples(ssd_home, "r1")]
    assert len(keys) == 12 and len(set(keys)) == 12


def test_unknown_hub_model_fails_cleanly():
    r = run_cli("sample", "no-such-org/no-such-model", "--limit", "2")
    assert r.returncode == 2
    assert _one_error_line(r.stderr)


@pytest.mark.parametrize("args, words", [
    (["sample", "smollm2-135m", "--top-p", "0"], "--top-p"),
    (["sample", "smollm2-135m", "--prompts", "missing.jsonl"], "use builtin, rstar"),
    (["sample", "./nope/model"], "unknown model"),
])
def test_user_mistakes_get_one_line(args, words):
    r = run_cli(*args)
    assert r.returncode == 2 and words in _one_error_line(r.stderr)


def test_malformed_prompts_file_names_the_line(tmp_path, tiny_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": \n')
    r = run_cli("sample", str(tiny_model), "--prompts", str(f))
    assert r.returncode == 2 and "p.jsonl:2" in r.stderr and "Traceback" not in r.stderr


def test_run_made_with_another_model_is_refused(tiny_model, smollm2):
    r = run_cli("sample", str(tiny_model), "--limit", "1", "--max-new-tokens", "2", "--run", "x")
    assert r.returncode == 0, r.stderr
    r = run_cli("sample", "smollm2-135m", "--limit", "1", "--run", "x")
    assert r.returncode == 2 and "was made with model" in r.stderr


def test_help_and_presets_are_instant_and_light():
    r = run_cli("--help")
    assert r.returncode == 0 and "sample" in r.stdout
    r = run_cli("presets")
    assert "qwen3-instruct" in r.stdout and "1.6/20/0.8" in r.stdout


def test_core_never_imports_ui_or_engines():
    code = ("import sys, ssd_local.config, ssd_local.app.runs, ssd_local.app.models, "
            "ssd_local.app.prompts, ssd_local.app.sampling, ssd_local.app.filters, "
            "ssd_local.backends, ssd_local.backends.base, ssd_local.backends.llamacpp, "
            "ssd_local.backends.torch, ssd_local.cli\n"
            "bad = [m for m in ('textual', 'rich', 'torch', 'transformers', 'llama_cpp', 'mlx') "
            "if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr
