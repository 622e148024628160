"""Screenshots of the TUI's key screens at 140x40, compared with the stored SVGs in
``tests/__snapshots__``. After an intended change of the UI, review the new pictures and
store them with ``pytest tests/test_tui_snapshots.py --snapshot-update``."""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_textual_snapshot")

from textual.widgets import Input  # noqa: E402

from ssd_local.app.inventory import Hardware  # noqa: E402
from ssd_local.tui.app import create_app  # noqa: E402

SIZE = (140, 40)
HW = Hardware("Linux x86_64", 8, 32.0, "CPU", "torch (CPU)")


@pytest.fixture(autouse=True)
def fixed_machine(tmp_path, monkeypatch):
    """The pictures must not depend on this machine: no HF cache, the embedded model."""
    from ssd_local.app.models import embedded_path

    if embedded_path("smollm2-135m") is None:
        pytest.skip("the pictures list the embedded smollm2-135m (make setup installs it)")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


async def no_blink(pilot) -> None:
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


def make_samples_run() -> None:
    from ssd_local.app.filters import mark
    from ssd_local.app.runs import Run

    answers = ["Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\n",
               "def rev(s):\n    return s[::-1]", "x = 1",
               "```python\nwhile True:\n    pass\n"]
    rows = [{"prompt_id": f"b{i:03d}", "sample_index": 0, "prompt": f"Problem {i}: write "
             "a small Python function.", "prompt_text": "", "completion": a,
             "prompt_tokens": 40 + i, "completion_tokens": 10 + 3 * i,
             "finish_reason": "length" if i == 3 else "stop", **mark(a), "seed": i,
             "engine": "llamacpp"} for i, a in enumerate(answers)]
    with Run.create_or_open("demo", {"ref": "smollm2-135m",
                                     "identity": "embedded:smollm2-135m"}) as run:
        run.append_samples(rows)
        run.set_stage("sample", "done", summary={"samples": len(rows)})


def test_home_screen(snap_compare):
    assert snap_compare(create_app(HW), terminal_size=SIZE, run_before=no_blink)


def test_new_distillation_form(snap_compare):
    assert snap_compare(create_app(HW), terminal_size=SIZE, press=["n"],
                        run_before=no_blink)


def test_samples_browser(snap_compare):
    make_samples_run()

    async def open_samples(pilot) -> None:
        pilot.app.open_samples("demo")
        await pilot.pause()
        await pilot.press("down")
        await no_blink(pilot)

    assert snap_compare(create_app(HW), terminal_size=SIZE, run_before=open_samples)


def test_evaluation_view(snap_compare):
    from test_tui import write_compare

    write_compare("r1")

    async def open_evals(pilot) -> None:
        await pilot.press("e")
        await no_blink(pilot)

    assert snap_compare(create_app(HW), terminal_size=SIZE, run_before=open_evals)
