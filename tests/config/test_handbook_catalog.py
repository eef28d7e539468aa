"""Every published alignment-handbook SFT/DPO/ORPO config (22 at HEAD 925acdf) through `--config`: each key is
named in docs/handbook.md, each config maps to a recipe, and each one's shape trains a step on the tiny model
and local copies of its datasets, with only what this machine cannot honour changed (`on_machine`)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.config.handbook_catalog import CATALOG, on_machine
from tests.conftest import ROOT, cli
from zephyr_train.stages.handbook import load_handbook


def _keys(config: dict) -> set[str]:
    keys = set(config)
    for entry in (config.get("dataset_mixture") or {}).get("datasets", []):
        keys |= {f"dataset_mixture.datasets[].{k}" for k in entry}
    keys |= {f"dataset_mixture.{k}" for k in config.get("dataset_mixture") or {} if k != "datasets"}
    return keys


def test_there_are_22_and_every_key_is_in_the_docs():
    assert len(CATALOG) == 22 and {stage for stage, _ in CATALOG.values()} == {"sft", "dpo", "orpo"}
    documented = set(re.findall(r"`([\w.\[\]]+)(?::[^`]*)?`", (ROOT / "docs" / "handbook.md").read_text()))
    missing = sorted({key for _, config in CATALOG.values() for key in _keys(config)} - documented)
    assert not missing, f"keys not in docs/handbook.md: {missing}"
    listed = (ROOT / "docs" / "handbook.md").read_text()
    assert all(f"`{name}`" in listed for name in CATALOG), "each config has its row in docs/handbook.md"


def _write(tmp_path, name: str, steps: int = 1):
    stage, config = on_machine(name, tmp_path / "data", output_dir=str(tmp_path / "out"), steps=steps)
    path = tmp_path / name.replace("/", "_")
    path.write_text(yaml.safe_dump(config))
    return stage, path


@pytest.mark.parametrize("name", list(CATALOG))
def test_each_config_maps(tmp_path, name, capsys):
    stage, path = _write(tmp_path, name)
    recipe = load_handbook(path, stage)
    section = recipe.stage(stage)
    published = CATALOG[name][1]
    assert recipe.stage_dir(stage) == tmp_path / "out"
    assert section.trainer["learning_rate"] == published["learning_rate"]
    mixture = (published.get("dataset_mixture") or {}).get("datasets", [])
    trained = [d for d in mixture if "test" not in d["split"]]
    assert len(section.datasets) == (len(trained) if mixture else 1)  # each entry a part, one id reused or not
    assert [d.weight for d in section.datasets] == [float(d["weight"]) for d in trained] if mixture else True
    warned = capsys.readouterr().err
    if published.get("use_liger_kernel"):
        assert "use_liger_kernel: true ignored on this machine" in warned and not section.trainer["use_liger_kernel"]


def _shape(name: str) -> tuple:
    """What a run exercises: the stage, the key set (mixture entries' keys included) and the template."""
    stage, config = CATALOG[name]
    return stage, tuple(sorted(_keys(config))), config.get("chat_template")


# One run per shape: configs with the same keys and template (CAI's anthropic/grok SFT, smollm2's dpo
# config/config_smol, starchat2's and zephyr-7b-gemma's DPO) differ only in values. The four zephyr-7b-beta
# configs run chained SFT -> DPO in test_handbook_published.py.
SHAPES = {_shape(name): name for name in reversed(CATALOG) if not name.startswith("zephyr-7b-beta/")}


def test_every_config_has_its_shape_run():
    run_here = {_shape(name) for name in SHAPES.values()}
    assert all(_shape(n) in run_here or n.startswith("zephyr-7b-beta/") for n in CATALOG) and len(SHAPES) == 15


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHAPES.values()))
def test_each_config_shape_trains(tmp_path, name):
    stage, path = _write(tmp_path, name)
    held_out = load_handbook(path, stage).stage(stage).eval is not None
    run = cli(stage, "--config", str(path), *([f"{stage}.eval.max_samples=4"] if held_out else []))
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stage"] == stage and summary["global_step"] == 1
