"""`patches: false` runs both stages as plain TRL and says so: on the console and in each summary.json."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOKE
from zephyr_train import run_files
from zephyr_train.stages import load_recipe
from zephyr_train.stages.dpo import PLAIN_HEAD


@pytest.mark.slow
def test_patches_false_is_plain_trl_recorded_per_stage(tmp_path, capsys):
    from zephyr_train.pipeline.run import run_pipeline

    recipe = load_recipe(SMOKE, [f"output_dir={tmp_path}", "patches=false", "sft.max_steps=2",
                                 "sft.eval.max_samples=8", "dpo.max_steps=1", "dpo.eval.max_samples=8",
                                 "dpo.max_prompt_length=64"])
    run_pipeline(recipe)
    out = capsys.readouterr().out
    off = "skipped: patches: false in the recipe (plain TRL)"
    sft = json.loads((tmp_path / "sft" / run_files.SUMMARY).read_text())
    dpo = json.loads((tmp_path / "dpo" / run_files.SUMMARY).read_text())
    assert sft["patches"] == {"packing": off, "lm_head": off}
    assert dpo["patches"] == {"dpo_log_probs": off, "prompt_length": off}
    assert dpo["lm_head"] == PLAIN_HEAD and dpo["padding_fraction"] is None and sft["padding_fraction"] is None
    assert f"TRL patches: dpo_log_probs {off}; prompt_length {off}" in out
    assert "patch prompt_length off: prompts are not cut to dpo.max_prompt_length" in out
    assert "packed pairs" not in out and f"DPO log-probs: {PLAIN_HEAD} LM head" in out
