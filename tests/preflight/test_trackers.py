"""report_to: every tracker's package checked before anything is written; trackio logs offline."""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

from tests.conftest import SMOKE, assert_user_error, cli
from zephyr_train.preflight import trackers
from zephyr_train.stages import load_recipe


def _missing_tracker() -> str:
    """A tracker transformers knows whose package this environment lacks (mlflow, neptune, ... are not in dev)."""
    for name, (needs, _) in trackers.PACKAGES.items():
        if name in trackers.known_trackers() and not all(any(map(trackers._installed, alt)) for alt in needs):
            return name
    pytest.skip("every tracker package is installed here")


def test_known_trackers_come_from_transformers():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(trackers.known_trackers()) == set(INTEGRATION_TO_CALLBACK)
    assert set(INTEGRATION_TO_CALLBACK) <= set(trackers.PACKAGES)  # each has its install line


def test_missing_and_unknown_trackers_are_named_with_the_fix():
    missing = _missing_tracker()
    recipe = load_recipe(SMOKE, [f"sft.report_to=[tensorboard, {missing}]", "dpo.report_to=tensorbored"])
    found = trackers.problems(recipe)
    assert len(found) == 2
    assert f"sft.report_to names {missing}, but" in found[0] and "pip install" in found[0]
    assert "set sft.report_to=none" in found[0]
    assert "dpo.report_to 'tensorbored' is not a tracker transformers knows" in found[1]
    assert trackers.problems(load_recipe(SMOKE, ["sft.report_to=[wandb, tensorboard]", "dpo.report_to=all"])) == []


def test_missing_tracker_stops_sft_before_anything_is_written(tmp_path):
    missing = _missing_tracker()
    out = tmp_path / "run"
    run = cli("sft", str(SMOKE), f"sft.report_to={missing}", f"output_dir={out}")
    assert_user_error(run, f"sft.report_to names {missing}", "pip install")
    assert not out.exists()  # no fingerprint, no resolved recipe


@pytest.mark.slow
def test_trackio_logs_a_stage_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # trackio's local store (read at its import)
    pytest.importorskip("trackio")  # in the dev extra; optional for users (`pip install zephyr-train[trackio]`)
    from trackio.sqlite_storage import SQLiteStorage

    from zephyr_train.pipeline.run import run_stage
    from zephyr_train.preflight.check import before_stage

    project = f"zt-test-{uuid.uuid4().hex[:8]}"  # unique, should trackio have been imported before
    out = tmp_path / "run"
    recipe = load_recipe(SMOKE, ["sft.max_steps=2", "sft.max_length=128", "sft.eval=null", "sft.logging_steps=1",
                                 "sft.datasets.0.weight=0.05", "sft.report_to=trackio", f"sft.project={project}",
                                 f"output_dir={out}"])
    before_stage(recipe, ("sft",))
    run_stage(recipe, "sft")
    database = SQLiteStorage.get_project_db_path(project)
    rows = sqlite3.connect(database).execute("select run_name, step, metrics from metrics order by id").fetchall()
    logged = [json.loads(m) for _, _, m in rows]
    assert {name for name, _, _ in rows} == {"run-sft"}  # the stage's run name (<output dir name>-sft)
    assert [m["train/global_step"] for m in logged if "train/loss" in m] == [1, 2]
