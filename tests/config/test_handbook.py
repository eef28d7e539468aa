"""alignment-handbook configs run with `--config FILE` unchanged; obsolete keys mapped with a warning."""

from __future__ import annotations

import pytest
import yaml

from zephyr_train.data.chat_template import ZEPHYR
from zephyr_train.errors import UserError
from zephyr_train.stages.handbook import load_handbook

# The handbook's zephyr-7b-beta sft/config_full.yaml, pointed at the built-in model and sample, offline.
SFT_CONFIG = {
    "model_name_or_path": "builtin:tiny-mistral", "model_revision": "main", "torch_dtype": "float32",
    "attn_implementation": "sdpa", "chat_template": ZEPHYR,
    "dataset_mixer": {"builtin:ultrachat-sample": 0.1}, "dataset_splits": ["train_sft", "test_sft"],
    "preprocessing_num_workers": 1, "bf16": False, "do_eval": True, "evaluation_strategy": "epoch",
    "gradient_accumulation_steps": 1, "gradient_checkpointing": True,
    "gradient_checkpointing_kwargs": {"use_reentrant": False}, "hub_model_id": "zephyr-7b-sft-full",
    "hub_strategy": "every_save", "learning_rate": 2.0e-05, "log_level": "info", "logging_steps": 5,
    "logging_strategy": "steps", "lr_scheduler_type": "cosine", "max_seq_length": 256, "max_steps": 2,
    "num_train_epochs": 1, "overwrite_output_dir": True, "per_device_eval_batch_size": 8,
    "per_device_train_batch_size": 4, "push_to_hub": False, "remove_unused_columns": True,
    "report_to": ["none"], "save_strategy": "no", "seed": 42, "warmup_ratio": 0.1,
}
# sft/config_qlora.yaml's model keys
QLORA_KEYS = {"load_in_4bit": True, "use_peft": True, "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.05,
              "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
              "bnb_4bit_quant_storage": "bfloat16"}
def write(tmp_path, config: dict, name: str = "config_full.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "out")}))
    return path


def test_sft_config_maps_to_a_recipe(tmp_path, capsys):
    recipe = load_handbook(write(tmp_path, SFT_CONFIG), "sft")
    warned = capsys.readouterr().err
    assert "max_seq_length is now max_length" in warned and "overwrite_output_dir has no effect" in warned
    assert recipe.model.name_or_path == "builtin:tiny-mistral" and recipe.chat_template == "zephyr"
    t = recipe.stage("sft").trainer
    assert t["max_length"] == 256 and t["warmup_steps"] == 0.1 and t["eval_strategy"] == "epoch"
    assert t["activation_checkpointing"] is True and t["dataset_num_proc"] == 1
    assert recipe.stage("sft").datasets[0].weight == 0.1 and recipe.stage("sft").eval.split == "test_sft"
    assert recipe.stage_dir("sft") == tmp_path / "out"  # the handbook's output_dir holds the model itself


def test_qlora_and_mixture_keys(tmp_path):
    config = {k: v for k, v in SFT_CONFIG.items() if k not in ("dataset_mixer", "dataset_splits")}
    config["dataset_mixture"] = {"datasets": [{"id": "builtin:ultrachat-sample", "split": "train_sft",
                                               "columns": ["messages"], "weight": 0.5}], "test_split_size": 0.1}
    recipe = load_handbook(write(tmp_path, {**config, **QLORA_KEYS, "torch_dtype": "bfloat16"}), "sft")
    quant = recipe.model.quantization
    assert quant.load_in_4bit and quant.bnb_4bit_compute_dtype == "bfloat16" and quant.bnb_4bit_quant_storage
    assert recipe.stage("sft").lora.r == 16 and "down_proj" in recipe.stage("sft").lora.target_modules
    assert recipe.stage("sft").eval.fraction == 0.1 and recipe.stage("sft").datasets[0].weight == 0.5


def test_not_a_handbook_config(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model:\n  name_or_path: builtin:tiny-mistral\n")
    with pytest.raises(UserError, match="not an alignment-handbook config"):
        load_handbook(path, "sft")


def test_cut_prompts_keeps_bos_and_the_end():
    from datasets import Dataset

    from zephyr_train.train.patches.prompt_length import cut_prompts

    ds = cut_prompts(Dataset.from_dict({"prompt_ids": [[1, 5, 6, 7, 8], [1, 9]]}), 3, bos=1)
    assert ds["prompt_ids"] == [[1, 7, 8], [1, 9]]


def test_liger_kernel_ignored_without_cuda_and_one_line_without_the_package(tmp_path, monkeypatch, capsys):
    from zephyr_train.stages import handbook

    path = write(tmp_path, {**SFT_CONFIG, "use_liger_kernel": True})
    monkeypatch.setattr(handbook.launcher, "has_nvidia_gpu", lambda: False)
    assert load_handbook(path, "sft").stage("sft").trainer["use_liger_kernel"] is False
    assert "use_liger_kernel: true ignored on this machine" in capsys.readouterr().err
    monkeypatch.setattr(handbook.launcher, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(handbook.launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"needs liger-kernel >= 0.3.0, not installed: pip install 'liger-kernel"):
        load_handbook(path, "sft")
    assert load_handbook(path, "sft", ["sft.use_liger_kernel=false"]).stage("sft").trainer["use_liger_kernel"] is False


def test_renamed_keys_and_values(tmp_path, capsys):
    config = {**SFT_CONFIG, "hub_model_revision": "v1.0", "packing": True, "packing_strategy": "ffd"}
    t = load_handbook(write(tmp_path, config), "sft").stage("sft").trainer
    assert t["hub_revision"] == "v1.0" and t["packing_strategy"] == "bfd"
    assert "packing_strategy: ffd is now bfd" in capsys.readouterr().err


def test_a_test_split_of_a_dataset_not_trained_on_is_left_out(tmp_path, capsys):
    config = {k: v for k, v in SFT_CONFIG.items() if k not in ("dataset_mixer", "dataset_splits")}
    config["dataset_mixture"] = {"datasets": [{"id": "builtin:ultrachat-sample", "split": "train_sft"},
                                              {"id": "other/helpful", "split": "test_sft"}], "test_split_size": 100}
    section = load_handbook(write(tmp_path, config), "sft").stage("sft")
    assert [d.path for d in section.datasets] == ["builtin:ultrachat-sample"] and section.eval.rows == 100
    assert "so they are left out and the eval set is carved from the mix as published" in capsys.readouterr().err


def test_an_eos_token_the_tokenizer_lacks_is_one_line_before_loading(tmp_path):
    config = {**SFT_CONFIG, "eos_token": "<|im_end|>"}  # SmolLM3's, on the tiny Mistral
    with pytest.raises(UserError, match=r"eos_token '<\|im_end\|>' is not in builtin:tiny-mistral's tokenizer; pass "
                                        r"sft.eos_token="):
        load_handbook(write(tmp_path, config), "sft")
    assert load_handbook(write(tmp_path, {**config, "eos_token": "</s>"}), "sft").stage("sft").trainer["eos_token"]


@pytest.mark.slow
def test_liger_kernel_in_a_recipe_is_the_same_rule(tmp_path):
    """The rule is the preflight's, so a recipe gets what a handbook config gets: on this CPU machine the key
    is turned off with a warning and the stage trains (transformers would raise an ImportError instead)."""
    from tests.conftest import cli

    run = cli("sft", "recipes/smoke.yaml", "sft.use_liger_kernel=true", "sft.max_steps=1", "sft.max_length=128",
              "sft.per_device_train_batch_size=2", "sft.eval=null", f"output_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "zephyr-train: warning: recipes/smoke.yaml: use_liger_kernel: true ignored on this machine" in run.stdout
