"""ORPO as a stage: a recipe with just an `orpo:` section trains the base model in one stage through TRL's
experimental ORPOTrainer, with held-out figures before and after, the report's curves and the card; bad input
is one line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SMOKE
from zephyr_train import run_files
from zephyr_train.errors import UserError
from zephyr_train.stages import KINDS, build_recipe, load_recipe, orpo

ORPO = {"datasets": [{"path": "builtin:ultrafeedback-sample", "split": "train_prefs"}],
        "eval": {"split": "test_prefs", "max_samples": 16}, "beta": 0.1, "max_length": 256, "max_steps": 3,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "learning_rate": 1e-3,
        "logging_steps": 1, "save_strategy": "no", "seed": 42}


def orpo_recipe(tmp_path: Path, **section):
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    del raw["sft"], raw["dpo"]
    raw.update(output_dir=str(tmp_path / "run"), orpo={**ORPO, **section})
    return build_recipe(raw, str(tmp_path / "orpo.yaml"))


@pytest.mark.slow
def test_orpo_alone_trains_the_base_and_reports_its_figures(tmp_path, capsys):
    from zephyr_train.pipeline.run import run_pipeline
    from zephyr_train.publish.report import write_report

    recipe = orpo_recipe(tmp_path)
    assert [s.kind for s in recipe.stages] == ["orpo"] and recipe.upstream("orpo") is None
    run_pipeline(recipe)
    out = capsys.readouterr().out
    stage_dir = tmp_path / "run" / "orpo"
    summary = json.loads((stage_dir / run_files.SUMMARY).read_text())
    assert summary["stage"] == "orpo" and summary["global_step"] == 3 and summary["train_pairs"] > 900
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert 0 <= before["accuracy"] <= 1 and after["log_odds_ratio"] < 0 and after["nll_loss"] > 0
    assert after["loss"] < before["loss"]  # 3 steps at lr 1e-3 on a random-init model: the NLL part drops
    assert "== ORPO: odds-ratio preference optimization" in out and "log_odds" in out
    assert "ORPO done" in out and "held-out preference accuracy" in out
    card = (stage_dir / "README.md").read_text()
    assert "odds ratio preference optimization (ORPO" in card and "held-out log-odds ratio" in card
    report = Path(write_report(tmp_path / "run")).read_text()
    assert "orpo_log_odds.png" in report
    assert (tmp_path / "run" / run_files.REPORT_FILES / "orpo_log_odds.png").stat().st_size > 1000


def test_orpo_section_with_another_stages_key_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        orpo_recipe(tmp_path, precompute_ref_log_probs=True)  # a DPO/KTO key: ORPO has no reference
    assert "\n" not in str(err.value) and "orpo" in str(err.value) and "precompute_ref_log_probs" in str(err.value)


def test_missing_experimental_trainer_names_the_version(tmp_path, monkeypatch):
    def gone(module: str):
        raise ModuleNotFoundError(module)

    monkeypatch.setattr(orpo, "module_file", gone)
    with pytest.raises(UserError, match=r"orpo stage needs TRL's trl.experimental.orpo \(TRL 1.16\); the installed "
                                        r"TRL 1\.16\.\d+ has none: pip install 'trl==1.16.\*'"):
        orpo_recipe(tmp_path)


def test_check_knows_orpo(tmp_path):
    from zephyr_train.preflight.check import check
    from zephyr_train.preflight.launcher import from_env

    recipe = orpo_recipe(tmp_path, beta=0)
    report = check(recipe, from_env(), estimate=True, stages=("orpo",))
    assert report.errors == [f"{recipe.source}: orpo.beta must be > 0 (the handbook's zephyr-141b ORPO used 0.05)"]
    assert KINDS["orpo"].holds_reference(recipe.stage("orpo")) is False
    assert load_recipe(SMOKE).stage("orpo") is None  # the smoke recipe has none


def test_check_sizes_the_zephyr_141b_recipe_on_8_h100(capsys):
    from tests.conftest import ROOT
    from zephyr_train.cli import main
    from zephyr_train.preflight.architectures import MIXTRAL_8X22B, architecture_of

    assert architecture_of("mistral-community/Mixtral-8x22B-v0.1") is MIXTRAL_8X22B
    recipe = ROOT / "recipes/zephyr-141b-orpo/orpo.yaml"
    assert [s.kind for s in load_recipe(recipe).stages] == ["orpo"]
    assert main(["check", str(recipe), "--gpus", "8", "--gpu-memory", "80"]) == 3  # one node is not enough
    out = capsys.readouterr().out
    assert "140.62B parameters" in out and "does NOT fit on 8 x 80 GiB" in out
    assert main(["check", str(recipe), "--gpu-memory", "80"]) == 0  # its launch: 4 nodes of 8, as published
    assert "fits on 32 x 80 GiB" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True], ids=["lora", "qlora"])
def test_orpo_with_lora_and_qlora_saves_an_adapter_and_its_merge(tmp_path, capsys, quantized):
    from zephyr_train.pipeline.run import run_stage

    recipe = orpo_recipe(tmp_path, lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}, max_steps=1,
                         max_length=128, eval={"split": "test_prefs", "max_samples": 4})
    if quantized:  # QLoRA: a 4-bit NF4 base (bitsandbytes' CPU kernels), fp32 compute on this box
        from zephyr_train.config.recipe import Quantization

        recipe.model.quantization = Quantization(load_in_4bit=True, bnb_4bit_compute_dtype="float32")
    result = run_stage(recipe, "orpo")
    stage_dir = tmp_path / "run" / "orpo"
    adapter = json.loads((stage_dir / "adapter_config.json").read_text())
    assert result.adapter and result.global_step == 1 and adapter["r"] == 8
    assert (Path(result.merged_model_dir) / "config.json").exists()  # merged into the 16/32-bit base
    assert ("4-bit NF4 weights" in capsys.readouterr().out) == quantized  # the banner, read off the built trainer
