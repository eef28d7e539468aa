"""The handbook's four published zephyr-7b-beta configs through `--config`, and its SFT -> DPO chain:
the SFT config's output_dir holds the model, the DPO config's model_name_or_path names that directory."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.config.handbook_configs import DPO_FULL, DPO_QLORA, PUBLISHED, SFT_FULL, SFT_QLORA, on_cpu
from tests.conftest import assert_user_error, cli
from zephyr_train.errors import UserError
from zephyr_train.stages.handbook import load_handbook


def write(tmp_path, config: dict, name: str):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_published_config_maps(tmp_path, name, capsys):
    stage = name.split("/")[0]
    config = on_cpu(PUBLISHED[name], "builtin:tiny-mistral", str(tmp_path / "out"))
    recipe = load_handbook(write(tmp_path, config, "c.yaml"), stage)
    section = recipe.stage(stage)
    assert recipe.stage_dir(stage) == tmp_path / "out"  # the model lands in output_dir itself
    assert [d.split for d in section.datasets] == [f"train_{'sft' if stage == 'sft' else 'prefs'}"]
    assert section.eval.split == ("test_sft" if stage == "sft" else "test_prefs")
    assert (section.lora is not None) == ("qlora" in name)
    if "qlora" in name:
        assert recipe.model.quantization.load_in_4bit and section.lora.r == PUBLISHED[name]["lora_r"]
    warned = capsys.readouterr().err
    if "dataset_mixture" in PUBLISHED[name]:  # both list the official test split as training data
        assert warned.count("official test split") == 1 and "is the eval set instead" in warned


def test_published_values_survive(tmp_path):
    recipe = load_handbook(write(tmp_path, on_cpu(DPO_FULL, "builtin:tiny-mistral", "o"), "c.yaml"), "dpo")
    t = recipe.stage("dpo").trainer
    assert t["beta"] == 0.01 and t["learning_rate"] == 5e-7 and t["warmup_steps"] == 0.1
    assert t["lr_scheduler_type"] == "cosine" and recipe.stage("dpo").options.max_prompt_length == 128
    assert recipe.model.dtype == "auto"  # torch_dtype: null


def _mixture_config(size, splits=("train_sft",)) -> dict:
    config = on_cpu(SFT_FULL, "builtin:tiny-mistral", "o")
    config["dataset_mixture"] = {"datasets": [{"id": "builtin:ultrachat-sample", "split": s} for s in splits],
                                 "test_split_size": size, "seed": 0}
    return config


@pytest.mark.parametrize("size, key, value", [(1000, "rows", 1000), (0.05, "fraction", 0.05)])
def test_test_split_size_int_is_rows_float_is_fraction(tmp_path, size, key, value):
    recipe = load_handbook(write(tmp_path, _mixture_config(size), "c.yaml"), "sft")
    evaluation = recipe.stage("sft").eval
    assert getattr(evaluation, key) == value and evaluation.seed == 0 and evaluation.split is None


@pytest.mark.parametrize("size, message", [(-3, "test_split_size must be"), (12.5, "neither a fraction"),
                                           ("many", "test_split_size must be")])
def test_bad_test_split_size(tmp_path, size, message):
    with pytest.raises(UserError, match=message):
        load_handbook(write(tmp_path, _mixture_config(size), "c.yaml"), "sft")


def test_only_test_splits_is_an_error(tmp_path):
    with pytest.raises(UserError, match="lists only test splits"):
        load_handbook(write(tmp_path, _mixture_config(100, ("test_sft",)), "c.yaml"), "sft")


def test_too_many_eval_rows_is_one_line_before_loading(tmp_path):
    config = _mixture_config(5000)
    run = cli("sft", "--config", str(write(tmp_path, config, "c.yaml")))
    assert_user_error(run, "eval.rows is 5000", "has only 2000 rows")
    assert not (tmp_path / "o").exists()


def _run(tmp_path, stage: str, config: dict, name: str, *extra: str):
    run = cli(stage, "--config", str(write(tmp_path, config, name)), f"{stage}.eval.max_samples=8", *extra)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_full_sft_then_dpo_through_output_dir(tmp_path):
    sft_dir, dpo_dir = tmp_path / "zephyr-7b-sft-full", tmp_path / "zephyr-7b-dpo-full"
    sft = _run(tmp_path, "sft", on_cpu(SFT_FULL, "builtin:tiny-mistral", str(sft_dir)), "sft_full.yaml")
    assert "is the eval set instead" in sft.stderr
    assert (sft_dir / "model.safetensors").exists() and (sft_dir / "tokenizer.json").exists()
    summary = json.loads((sft_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["eval_loss"] is not None
    # the published DPO config, pointed at the SFT config's output_dir, unchanged otherwise
    _run(tmp_path, "dpo", on_cpu(DPO_FULL, str(sft_dir), str(dpo_dir)), "dpo_full.yaml")
    assert (dpo_dir / "model.safetensors").exists()
    assert json.loads((dpo_dir / "summary.json").read_text())["global_step"] == 2


@pytest.mark.slow
def test_qlora_sft_then_dpo_through_output_dir(tmp_path):
    sft_dir, dpo_dir = tmp_path / "zephyr-7b-sft-qlora", tmp_path / "zephyr-7b-dpo-qlora"
    _run(tmp_path, "sft", on_cpu(SFT_QLORA, "builtin:tiny-mistral", str(sft_dir), steps=1), "sft_qlora.yaml")
    assert (sft_dir / "adapter_config.json").exists() and not (sft_dir / "config.json").exists()
    # the SFT adapter is merged into its base (16/32-bit) before the 4-bit DPO model loads
    _run(tmp_path, "dpo", on_cpu(DPO_QLORA, str(sft_dir), str(dpo_dir), steps=1), "dpo_qlora.yaml")
    assert (sft_dir / "merged" / "config.json").exists()
    assert (dpo_dir / "adapter_config.json").exists() and (dpo_dir / "merged" / "config.json").exists()


def test_use_peft_is_mapped_and_dora_follows_the_schema(tmp_path, capsys):
    config = {**on_cpu(SFT_QLORA, "builtin:tiny-mistral", "o"), "use_dora": True}
    recipe = load_handbook(write(tmp_path, config, "c.yaml"), "sft")
    warned = capsys.readouterr().err
    assert "use_peft has no effect" not in warned and recipe.stage("sft").lora is not None
    assert recipe.stage("sft").lora.get("use_dora") is True  # PEFT's LoraConfig field, under its own name
