"""`patches: false` runs both stages as plain TRL and says so: on the console and in each summary.json."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOKE
from zephyr_train import run_files
from zephyr_train.stages import build_recipe
from zephyr_train.stages.dpo import PLAIN_HEAD


@pytest.mark.slow
def test_patches_false_is_plain_trl_recorded_per_stage(tmp_path, capsys):
    """DPO alone from the base (SFT's patches off are checked in tests/train/patches/test_against_trl.py)."""
    import yaml

    from zephyr_train.pipeline.run import run_stage

    raw = yaml.safe_load(SMOKE.read_text())
    del raw["sft"]
    raw.update(output_dir=str(tmp_path), patches=False)
    raw["dpo"].update(max_steps=1, max_length=128, max_prompt_length=64, per_device_train_batch_size=2,
                      eval={"split": "test_prefs", "max_samples": 4})
    run_stage(build_recipe(raw, str(tmp_path / "recipe.yaml")), "dpo")
    out = capsys.readouterr().out
    off = "skipped: patches: false in the recipe (plain TRL)"
    dpo = json.loads((tmp_path / "dpo" / run_files.SUMMARY).read_text())
    assert dpo["patches"] == {"dpo_log_probs": off, "prompt_length": off, "lean_layers": off}
    assert dpo["lm_head"] == PLAIN_HEAD and dpo["padding_fraction"] is None
    assert f"TRL patches: dpo_log_probs {off}; prompt_length {off}; lean_layers {off}" in out
    assert "patch prompt_length off: prompts are not cut to dpo.max_prompt_length" in out
    assert "packed pairs" not in out and f"DPO log-probs: {PLAIN_HEAD} LM head" in out
