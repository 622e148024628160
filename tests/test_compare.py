"""`ssd-local compare`, complete: the base at the distillation settings, `--base-grid`,
pass@k with paired intervals for every k, the tuned model's measured best written to the
run (manifest, merged/generation_config.json, the GGUFs' general.sampling.* keys) and
`serve` decoding with it. The integration tests share the suite's ONE distilled run (the
session fixture `distilled` in conftest); each works on a hard-linked copy of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, copy_of, run_cli
from ssd_local.config import CompareConfig, Decoding


def _serving_line(run: str, port: int) -> str:
    """The line `ssd-local serve RUN` prints on start; the server is stopped right after."""
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "serve", run, "--port",
                             str(port)], cwd=ROOT, env=dict(os.environ), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, text = time.time() + 120, ""
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError("serve exited before printing its decoding: " + text)
            if line.startswith("-- ") and text:  # the client snippets follow the line
                return text
            if line.startswith("serving") or text:
                text += line  # the line, wrapped at the terminal's width
        raise AssertionError("serve printed no 'serving' line")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_compare_prints_the_skeptics_row_and_serve_uses_the_measured_best(distilled,
                                                                          monkeypatch):
    from ssd_local.app import decoding, serving
    from ssd_local.app.runs import Run, sha256_file
    from ssd_local.backends.gguf_meta import read_sampling

    run_dir = copy_of(distilled, "c1", monkeypatch)
    gguf = run_dir / "gguf" / "demo-q8_0.gguf"  # hard-linked to demo's
    before = decoding.tuned(Run.load("c1"))
    assert "generic preset's T_eval" in before.source and "not measured yet" in before.source
    assert "`ssd-local compare c1` finds the best" in before.source
    assert serving.plan("c1").decoding == before
    meta = read_sampling(gguf)  # export carried the preset's decoding, in the paper's order
    assert meta["general.sampling.sequence"] == "temperature;top_k;top_p"
    assert meta["general.sampling.temp"] == pytest.approx(before.decoding.temperature)
    assert meta["general.sampling.min_p"] == 0.0

    r = run_cli("compare", "c1", "--benchmark", "humaneval", "--limit", "3",
                "--temperatures", "0.4,0.8,1.2", "--max-new-tokens", "96", timeout=1800)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "base at the distillation settings" in out
    assert any(w in out for w in ("SSD beat", "SSD fell short", "SSD did not clearly beat"))
    assert "Against the base model sampled at the distillation settings (T=1 top-k=20" in out
    assert "written to the run" in out

    evals = run_dir / "evals"
    assert (evals / "compare-humaneval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((evals / "compare-humaneval.json").read_text())
    rows = res["rows"]
    assert [(x["model"], x["temperature"]) for x in rows] == [
        ("base", 0.4), ("base", 0.8), ("base", 1.2), ("base", 1.0),
        ("tuned", 0.4), ("tuned", 0.8), ("tuned", 1.2)]
    skeptic = res["distillation_settings"]
    assert (skeptic["temperature"], skeptic["top_k"], skeptic["top_p"]) == (1.0, 20, 0.8)
    assert skeptic["distillation"] and skeptic["role"] == "distillation settings"
    for key in ("difference", "vs_distillation_settings"):
        lo, hi = res[key]["pass@1"]["ci95"]
        assert lo <= res[key]["pass@1"]["value"] <= hi
    assert all(isinstance(x["no_code"], int) for x in rows)
    assert len([d for d in evals.iterdir() if d.is_dir()]) == 7  # a folder per evaluation
    best = res["tuned_best"]
    assert best["pass@1"] == max(x["pass@1"] for x in rows if x["model"] == "tuned")

    # the measured best is the tuned model's decoding from now on, everywhere
    t = best["temperature"]
    m = res["measured"]
    assert m["decoding"] == {"temperature": t, "top_k": best["top_k"], "top_p": best["top_p"]}
    assert (m["benchmark"], m["problems"], m["samples_per_problem"]) == ("humaneval", 3, 1)
    run = Run.load("c1")
    after = decoding.tuned(run)
    assert after.decoding == Decoding(t, best["top_k"], best["top_p"])
    assert "measured best of `compare` on humaneval" in after.source
    assert "over 3 problems x 1 samples" in after.source
    gc = json.loads((run_dir / "merged" / "generation_config.json").read_text())
    assert (gc["temperature"], gc["do_sample"]) == (t, t > 0)
    assert read_sampling(gguf)["general.sampling.temp"] == pytest.approx(t)
    assert run.manifest["artefacts"]["gguf/demo-q8_0.gguf"]["sha256"] == sha256_file(gguf)
    assert read_sampling(distilled / "runs" / "demo" / "gguf" / "demo-q8_0.gguf") == meta

    line = " ".join(_serving_line("c1", _port()).split())
    assert f"default decoding T={t:g} top-k=20 top-p=0.8" in line
    assert "measured best of `compare` on humaneval: pass@1" in line


@pytest.mark.slow
def test_base_grid_rows_pass_at_k_and_the_verdict_against_the_best_base(distilled,
                                                                        monkeypatch):
    copy_of(distilled, "c2", monkeypatch)
    r = run_cli("compare", "c2", "--benchmark", "humaneval", "--limit", "2",
                "--temperatures", "0.8", "--base-grid", "--n", "2", "--k", "1,2",
                "--max-new-tokens", "32", "--no-adopt", timeout=1800,
                env={"COLUMNS": "200"})  # a table as wide as its header
    assert r.returncode == 0, r.stderr
    assert "pass@2 [95% interval]" in r.stdout and "base (grid)" in r.stdout
    res = json.loads((distilled / "runs" / "c2" / "evals" / "compare-humaneval.json")
                     .read_text())
    base = [x for x in res["rows"] if x["model"] == "base"]
    assert sorted((x["role"], x["top_k"], x["top_p"]) for x in base) == [
        ("distillation settings", 20, 0.8), ("grid", 0, 0.8), ("grid", 0, 0.95),
        ("grid", 0, 1.0), ("grid", 20, 0.95), ("grid", 20, 1.0), ("sweep", 20, 0.8)]
    for x in res["rows"]:
        assert set(x["ci95"]) == {"pass@1", "pass@2"} and x["pass@2"] >= x["pass@1"]
    assert set(res["difference"]) == {"pass@1", "pass@2"}
    assert res["base_best"]["pass@1"] == max(x["pass@1"] for x in base)
    assert "the best-tuned base model (best of 7 base decodings" in res["verdict"]
    assert res["measured"] is None
    assert "measured_decoding" not in json.loads(
        (distilled / "runs" / "c2" / "manifest.json").read_text())


# -- fast: the plan, the verdict, the decoding's source, the GGUF rewrite -------------------
def _run(name: str = "r") -> "object":
    from ssd_local.app.runs import Run

    with Run.create_or_open(name, {"ref": "smollm2-135m",
                                   "identity": "embedded:smollm2-135m"}) as run:
        run.manifest["config"] = {"sample": {"preset": "generic", "temperature": 1.6,
                                             "top_k": 20, "top_p": 0.8}}
        run.save()
    return Run.load(name)


def test_the_plan_adds_the_distillation_settings_and_the_grid_once():
    from ssd_local.app.evaluation.compare import plans

    run = _run()
    p = plans(run, CompareConfig(temperatures="0,0.8"))
    assert [(d.temperature, d.top_k, d.top_p, role) for d, role in p["base"]] == [
        (0.0, 20, 0.8, "sweep"), (0.8, 20, 0.8, "sweep"), (1.6, 20, 0.8, "distillation settings")]
    assert [d.temperature for d, _ in p["tuned"]] == [0.0, 0.8]
    grid = plans(run, CompareConfig(temperatures="0,0.8,1.6", base_grid=True))["base"]
    assert len(grid) == 1 + 6 + 6  # greedy once; 0.8 and 1.6: the 2 x 3 grid each
    assert sum(r == "distillation settings" for _, r in grid) == 0  # 1.6/20/0.8 is a grid point
    assert len({d for d, _ in grid}) == len(grid)


def _point(model, d, passed, role="sweep", n=5):
    from ssd_local.app.evaluation.verdict import Point

    return Point(model, d, {f"p{i}": (n, c) for i, c in enumerate(passed)}, role)


def test_the_verdict_is_against_the_best_base_and_says_which():
    from ssd_local.app.evaluation.verdict import GRID, verdict

    skeptic = Decoding(1.6, 20, 0.8)
    pts = [_point("base", Decoding(0.8, 20, 0.8), [1, 1, 0, 1]),
           _point("base", Decoding(0.8, 0, 0.95), [3, 3, 2, 3], GRID),
           _point("base", skeptic, [0, 1, 0, 0], "distillation settings"),
           _point("tuned", Decoding(0.8, 20, 0.8), [4, 4, 3, 3]),
           _point("tuned", Decoding(1.2, 20, 0.8), [5, 5, 5, 5])]
    v = verdict(pts, [1, 5], grid=True, distillation=skeptic)
    assert (v["base_best"]["top_k"], v["base_best"]["top_p"]) == (0, 0.95)
    assert v["tuned_best"]["temperature"] == 1.2
    assert v["difference"]["pass@1"]["value"] == pytest.approx(1.0 - 0.55)
    assert set(v["difference"]) == {"pass@1", "pass@5"}
    assert v["vs_distillation_settings"]["pass@1"]["value"] == pytest.approx(1.0 - 0.05)
    assert v["verdict"].startswith("SSD beat the best-tuned base model (best of 3 base "
                                   "decodings: T=0.8 top-k=off top-p=0.95, pass@1 55.0%)")
    assert "pass@5:" in v["verdict"] and "distillation settings (T=1.6" in v["verdict"]
    plain = verdict([p for p in pts if p.role != GRID], [1], distillation=skeptic)
    assert "the base model's best temperature at its own top-k/top-p (T=0.8 top-k=20" \
        in plain["verdict"] and "--base-grid" in plain["verdict"]
    assert plain["distillation_settings"]["pass@1"] == pytest.approx(0.05)


def test_decoding_tuned_says_its_source_before_and_after_a_comparison(ssd_home):
    from ssd_local.app import decoding, measured
    from ssd_local.app.runs import Run

    run = _run("m")
    before = decoding.tuned(run)
    assert before.decoding == Decoding(1.1, 20, 0.8)  # the generic preset's T_eval
    assert before.source == ("the generic preset's T_eval; not measured yet; `ssd-local "
                             "compare m` finds the best")
    (run.path / "merged").mkdir()
    (run.path / "merged" / "generation_config.json").write_text('{"eos_token_id": 2}')
    best = {"temperature": 0.0, "top_k": 20, "top_p": 0.8, "pass@1": 0.11,
            "ci95": {"pass@1": [0.05, 0.18]}}
    rec = measured.record(best, benchmark="humaneval", problems=82, samples=1,
                          comparison=run.path / "evals" / "compare-humaneval.json",
                          settings={})
    assert measured.adopt("m", rec)
    after = decoding.tuned(Run.load("m"))
    assert after.decoding == Decoding(0.0, 20, 0.8)  # greedy is served as greedy
    assert after.source.startswith("greedy; measured best of `compare` on humaneval: pass@1 "
                                   "11.0% over 82 problems x 1 samples")
    gc = json.loads((run.path / "merged" / "generation_config.json").read_text())
    assert gc == {"eos_token_id": 2, "do_sample": False, "temperature": 0.0, "top_k": 20,
                  "top_p": 0.8}


def test_a_ggufs_sampling_keys_are_rewritten_atomically_and_it_still_loads(smollm2, tmp_path):
    from ssd_local.backends.gguf_meta import _layout, read_sampling, write_sampling

    path = tmp_path / "m.gguf"
    shutil.copy(smollm2, path)
    assert read_sampling(path) == {}
    write_sampling(path, Decoding(0.6, 0, 0.95))
    write_sampling(path, Decoding(0.4, 20, 0.8))  # replaces, does not duplicate
    s = read_sampling(path)
    assert s["general.sampling.temp"] == pytest.approx(0.4) and s["general.sampling.top_k"] == 20
    assert s["general.sampling.sequence"] == "temperature;top_k;top_p"
    (new, m1, f1), (old, m2, f2) = _layout(path), _layout(smollm2)
    assert len(new.kvs) == len(old.kvs) + 6 and new.n_tensors == old.n_tensors
    assert bytes(new.buf[new.data_offset:]) == bytes(old.buf[old.data_offset:])  # tensors
    for x in (new.buf, m1, f1, old.buf, m2, f2):
        (x.release if isinstance(x, memoryview) else x.close)()
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # no temporary left
    from llama_cpp import Llama

    m = Llama(str(path), n_ctx=128, verbose=False)
    assert m.metadata["general.sampling.top_p"].startswith("0.8")
    out = m.create_completion("def add(a, b):", max_tokens=4, temperature=0)
    assert out["choices"][0]["text"]
