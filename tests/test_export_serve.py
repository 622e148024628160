"""Export (llama.cpp's converter and quantizer), serving through llama.cpp with the real
`openai` client, and distill end to end with resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, copy_of, run_cli

pytest.importorskip("llama_cpp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(target, port, *extra, env=None):
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "serve", target,
                             "--port", str(port), *extra], cwd=ROOT, env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except urllib.error.HTTPError as exc:
            if exc.code != 503:  # 503: llama.cpp's server is still loading the model
                return proc  # answering (e.g. 401 without a key)
            time.sleep(0.3)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not start")


def _stop(proc):
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) == 0


def test_export_converts_quantizes_and_checks_each_gguf(smol_tokenizer_model):
    from ssd_local.config import ExportConfig, SampleConfig, TrainConfig
    from ssd_local.app.export import export
    from ssd_local.app.runs import Run
    from ssd_local.app.sampling import sample
    from ssd_local.app.training import train
    from ssd_local.backends.llamacpp import LlamaCppEngine

    sample(str(smol_tokenizer_model), SampleConfig(limit=4, max_new_tokens=8), "x")
    # a random model writes one-line noise; give it answers that pass the filter
    f = Run.load("x").samples_path
    rows = [dict(json.loads(x), completion="```python\nprint(1)\n```", degenerate=None)
            for x in f.read_text().splitlines()]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train("x", TrainConfig(max_steps=1, effective_batch=4))
    ggufs = export("x", ExportConfig(quant="f16,q8_0")).ggufs
    run = Run.load("x")
    assert set(ggufs) == {"f16", "q8_0"}
    for q, art in ggufs.items():
        p = run.path / "gguf" / f"x-{q}.gguf"
        assert p.stat().st_size == art.bytes and len(art.sha256) == 64
        eng = LlamaCppEngine(p)
        assert "<|im_start|>" in eng.meta("tokenizer.chat_template")  # template kept
        eng.close()
    assert run.stage_state("export") == "done"
    log = (run.path / "logs" / "export.log").read_text()
    assert "convert_hf_to_gguf.py" in log and "quantize" in log
    # rerun: nothing redone
    mtime = (run.path / "gguf" / "x-q8_0.gguf").stat().st_mtime
    export("x", ExportConfig(quant="f16,q8_0"))
    assert (run.path / "gguf" / "x-q8_0.gguf").stat().st_mtime == mtime


def test_export_needs_a_merged_model_and_known_quants(tiny_model):
    from ssd_local.config import SampleConfig
    from ssd_local.app.sampling import sample

    sample(str(tiny_model), SampleConfig(limit=1, max_new_tokens=2), "y")
    r = run_cli("export", "y")
    assert r.returncode == 2 and "no merged model yet" in r.stderr
    r = run_cli("export", "y", "--quant", "q3_xx")
    assert r.returncode == 2 and "unknown quant type q3_xx" in r.stderr


def test_unsupported_architecture_is_named(tmp_path):
    from ssd_local.backends import converter
    from ssd_local.errors import UserError

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(
        '{"architectures": ["NopeForCausalLM"], "model_type": "nope"}')
    with pytest.raises(UserError, match="Model NopeForCausalLM is not supported"):
        converter.convert(tmp_path / "m", tmp_path / "x.gguf", tmp_path / "log.txt")


def test_the_engine_gets_the_runs_decoding_server_wide(smollm2, tmp_path):
    """What a request that sets no sampling gets is set on llama.cpp's server itself (no
    layer in front of it): the run's T_eval/top-k/top-p in the paper's order, min-p and the
    penalties off; each slot a window of n_ctx tokens; /slots (clients' prompts) off."""
    pytest.importorskip("xllamacpp")
    from ssd_local.backends.llama_server import SAMPLERS, EngineSpec, params

    spec = EngineSpec(str(smollm2), "r", "127.0.0.1", 8080, "k", 4096, 3, 2, 0, 1.1, 20, 0.8,
                      0, str(tmp_path / "log"))
    p = params(spec)
    s = p.sampling
    assert s.samplers == SAMPLERS
    order = SAMPLERS.split(";")
    assert order.index("temperature") < order.index("top_k") < order.index("top_p")
    assert (round(s.temp, 6), s.top_k, round(s.top_p, 6)) == (1.1, 20, 0.8)
    assert s.min_p == 0 and s.penalty_repeat == 1 and s.penalty_freq == 0 \
        and s.penalty_present == 0 and s.dry_multiplier == 0 and s.xtc_probability == 0
    assert p.n_parallel == 3 and p.n_ctx == 3 * 4096 and not p.kv_unified
    assert p.api_keys == ["k"] and p.model_alias == {"r"} and not p.endpoint_slots


def test_serve_refuses_without_key_and_checks_binding(smollm2):
    port = free_port()
    proc = _serve("smollm2-135m", port, "--api-key", "s3cret")
    try:
        from openai import AuthenticationError, OpenAI

        bad = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong")
        with pytest.raises(AuthenticationError):
            bad.models.list()
        good = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret")
        assert [m.id for m in good.models.list()] == ["smollm2-135m"]
        r = run_cli("serve", "smollm2-135m", "--port", str(port))
        assert r.returncode == 2 and f"port {port}" in r.stderr and "in use" in r.stderr
    finally:
        _stop(proc)
    r = run_cli("serve", "smollm2-135m", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2 and "--api-key" in r.stderr
    r = run_cli("serve", "no-such-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_done_when_distill_then_serve_to_an_openai_client(distilled, monkeypatch):
    out = (distilled / "distill.out").read_text()  # the suite's one distilled run, 'demo'
    assert "ssd-local serve demo" in out and "demo-q8_0.gguf" in out
    copy_of(distilled, "r2", monkeypatch)
    from ssd_local.app.runs import Run

    run = Run.load("r2")
    assert [p.name for p in (run.path / "gguf").glob("*.gguf")] == ["demo-q8_0.gguf"]
    assert all(run.stage_state(s) == "done" for s in ("sample", "train", "fuse", "export"))
    listing = run_cli("models")
    assert "r2" in listing.stdout and "q8_0" in listing.stdout
    port = free_port()
    proc = _serve("r2", port)
    try:
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        assert [m.id for m in client.models.list()] == ["r2"]
        msgs = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
        out = client.chat.completions.create(model="r2", messages=msgs, max_tokens=24)
        assert out.choices[0].message.content.strip()
        chunks = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="r2", messages=msgs, max_tokens=16, stream=True)]
        assert len(chunks) > 2 and "".join(chunks).strip()
        comp = client.completions.create(model="r2", prompt="def add(a, b):", max_tokens=8)
        assert comp.choices[0].text
    finally:
        _stop(proc)


def test_distill_resumes_after_a_kill_between_stages(tiny_model, ssd_home):
    args = ["distill", str(tiny_model), "--limit", "16", "--max-new-tokens", "8",
            "--max-steps", "60", "--effective-batch", "4", "--save-every", "5",
            "--stop-after", "fuse", "--run", "k"]
    manifest = ssd_home / "runs" / "k" / "manifest.json"
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, "distill ended before it could be killed"
        ck = ssd_home / "runs" / "k" / "checkpoints"
        if ck.exists() and any(ck.glob("step-*")):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    man = json.loads(manifest.read_text())
    assert man["stages"]["sample"]["state"] == "done"
    assert man["stages"]["train"]["state"] == "running"
    sampled_at = man["stages"]["sample"]["updated"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads(manifest.read_text())
    assert man["stages"]["sample"]["updated"] == sampled_at  # not sampled again
    assert man["stages"]["train"]["state"] == "done" and man["stages"]["fuse"]["state"] == "done"
    lines = (ssd_home / "runs" / "k" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 16
    steps = [json.loads(x)["step"] for x in
             (ssd_home / "runs" / "k" / "train_metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
