"""The run-directory rules, without training: what a stage directory holds decides skip, resume or stop."""

from __future__ import annotations

import json

import pytest

from zephyr_train.errors import UserError
from zephyr_train.run_files import FINGERPRINT, SUMMARY
from zephyr_train.train import stage_dir

SETTINGS = {"digest": "abc", "settings": {"sft": {"learning_rate": 2e-5}}}
OTHER = {"digest": "def", "settings": {"sft": {"learning_rate": 1e-4}}}


def checkpoint(directory, step, finished=True):
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if finished:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_states(tmp_path):
    out = tmp_path / "sft"
    assert stage_dir.state_of(out, SETTINGS) == "empty"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert stage_dir.state_of(out, SETTINGS) == "foreign"
    stage_dir.claim_dir(out, SETTINGS, overwrite=True)
    assert not (out / "notes.txt").exists()  # cleared only because overwrite was asked for
    assert stage_dir.state_of(out, SETTINGS) == "open"
    assert stage_dir.state_of(out, OTHER) == "changed"
    (out / SUMMARY).write_text(json.dumps({"global_step": 7}))
    assert stage_dir.state_of(out, SETTINGS) == "finished"


def test_resume_from_the_last_finished_checkpoint(tmp_path):
    stage_dir.claim_dir(tmp_path, SETTINGS)
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 200)
    checkpoint(tmp_path, 300, finished=False)  # interrupted while saving
    (tmp_path / "checkpoint-final").mkdir()
    assert stage_dir.inspect(tmp_path, SETTINGS, "sft") == tmp_path / "checkpoint-200"


def test_inspect_stops_with_what_was_found(tmp_path):
    stage_dir.claim_dir(tmp_path, SETTINGS)
    with pytest.raises(UserError, match=r"other settings \(sft.learning_rate: 2e-05 then, 0.0001 now\)"):
        stage_dir.inspect(tmp_path, OTHER, "sft")
    (tmp_path / SUMMARY).write_text(json.dumps({"global_step": 7}))
    with pytest.raises(UserError, match="already holds a finished sft run \\(7 steps"):
        stage_dir.inspect(tmp_path, SETTINGS, "sft")
    assert stage_dir.inspect(tmp_path, SETTINGS, "sft", overwrite=True) is None


def test_claim_records_the_fingerprint(tmp_path):
    stage_dir.claim_dir(tmp_path / "new", SETTINGS)
    assert json.loads((tmp_path / "new" / FINGERPRINT).read_text())["digest"] == "abc"
