import json
import os

import pytest

from ssd_local.app import runs
from ssd_local.errors import UserError
from ssd_local.app.runs import Run, RunLock, atomic_write_json

MODEL = {"ref": "m", "identity": "local:/m"}


def test_home_follows_env(ssd_home):
    assert runs.home() == ssd_home
    assert runs.runs_root() == ssd_home / "runs"


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_manifest_records_versions_and_stage_states():
    with Run.create_or_open("r", MODEL) as run:
        run.set_stage("sample", "running")
        run.set_stage("sample", "done", summary={"samples": 3})
    man = json.loads((runs.runs_root() / "r" / "manifest.json").read_text())
    assert man["stages"]["sample"]["state"] == "done"
    assert "ssd-local" in man["versions"]
    [info] = runs.list_runs()
    assert info.name == "r" and info.stages["sample"] == "done" and info.samples == 3


def test_second_writer_is_refused_until_the_first_releases():
    run = Run.create_or_open("r", MODEL)
    with pytest.raises(UserError, match=f"in use by pid {os.getpid()}"):
        Run.create_or_open("r", MODEL)
    run.unlock()
    Run.create_or_open("r", MODEL).unlock()


def test_run_made_with_another_model_is_refused():
    Run.create_or_open("r", MODEL).unlock()
    with pytest.raises(UserError, match="was made with model 'm'"):
        Run.create_or_open("r", {"ref": "other", "identity": "local:/other"})


def test_torn_last_line_is_cut_on_repair():
    with Run.create_or_open("r", MODEL) as run:
        run.append_samples([{"prompt_id": "a", "sample_index": 0}])
        with open(run.samples_path, "ab") as f:
            f.write(b'{"prompt_id": "b", "sampl')  # kill -9 in the middle of a write
        assert len(run.read_samples()) == 1
        assert len(run.read_samples(repair=True)) == 1
        run.append_samples([{"prompt_id": "c", "sample_index": 0}])
        assert [s["prompt_id"] for s in run.read_samples()] == ["a", "c"]


def test_bad_run_names_are_refused():
    with pytest.raises(UserError, match="not valid"):
        Run.create_or_open("../escape", MODEL)


def test_lock_file_is_released_when_process_dies(tmp_path):
    import subprocess
    import sys

    (tmp_path / "r").mkdir()
    code = ("import sys, os; from pathlib import Path; from ssd_local.app.runs import RunLock; "
            f"RunLock(Path({str(tmp_path / 'r' / '.lock')!r})).acquire(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    lock = RunLock(tmp_path / "r" / ".lock")
    lock.acquire()
    lock.release()


def test_a_killed_running_stage_lists_as_interrupted():
    run = Run.create_or_open("r", MODEL)
    run.set_stage("sample", "running")
    assert runs.list_runs()[0].stages["sample"] == "running"  # we hold the lock
    run.unlock()  # as if the process had died
    assert runs.list_runs()[0].stages["sample"] == "interrupted"
