"""A stage's `lora` section is PEFT's LoraConfig: every field under its PEFT name, checked before loading."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from tests.conftest import SMOKE
from zephyr_train.config.lora import NOT_OURS, peft_fields
from zephyr_train.config.recipe import to_dict
from zephyr_train.errors import UserError
from zephyr_train.stages import build_recipe, load_recipe
from zephyr_train.stages.handbook import to_recipe


def test_schema_is_peft_loraconfig():
    from peft import LoraConfig

    real = {f.name: f for f in dataclasses.fields(LoraConfig) if not f.name.startswith("_")}
    ours = peft_fields()
    assert set(ours) == set(real) - NOT_OURS
    for name, field in ours.items():
        default = real[name].default
        if default is not dataclasses.MISSING and not field.computed and not dataclasses.is_dataclass(default):
            assert field.default == default, name
    assert set(ours["bias"].choices) == {"none", "all", "lora_only"}
    assert "pissa" in ours["init_lora_weights"].choices


def test_peft_fields_reach_loraconfig():
    from zephyr_train.inference.modeling import lora_config

    recipe = load_recipe(SMOKE, ["sft.lora.use_dora=true", "sft.lora.lora_alpha=32",
                                 "sft.lora.layers_to_transform=[0, 2]", "sft.lora.init_lora_weights=pissa_niter_4",
                                 "dpo.lora.use_rslora=true", "dpo.lora.rank_pattern={q_proj: 4}"])
    sft, dpo = lora_config(recipe.stage("sft").lora), lora_config(recipe.stage("dpo").lora)
    assert sft.use_dora and sft.lora_alpha == 32 and sft.layers_to_transform == [0, 2]
    assert sft.init_lora_weights == "pissa_niter_4" and sft.r == 16 and sft.task_type == "CAUSAL_LM"
    assert dpo.use_rslora and not dpo.use_dora and dpo.rank_pattern == {"q_proj": 4}
    # the resolved recipe writes them back under PEFT's names and reads the same
    again = build_recipe(to_dict(recipe), "resolved")
    assert again.stage("sft").lora == recipe.stage("sft").lora and again.stage("dpo").lora == recipe.stage("dpo").lora
    assert to_dict(again)["sft"]["lora"] == to_dict(recipe)["sft"]["lora"]


def test_unchanged_lora_section_keeps_its_resolved_form():
    """Fingerprints of runs made before stay valid: no PEFT key appears unless the recipe sets it."""
    resolved = to_dict(load_recipe(SMOKE, ["sft.lora.r=8"]))["sft"]["lora"]
    assert set(resolved) == {"r", "alpha", "dropout", "target_modules", "modules_to_save", "bias"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.lora.use_dora=maybe", "sft.lora.use_dora expects bool, got 'maybe'"),
        ("sft.lora.use_doraa=true", "unknown key 'sft.lora.use_doraa'"),
        ("sft.lora.init_lora_weights=magic", "sft.lora.init_lora_weights must be one of gaussian, eva"),
        ("sft.lora.bias=some", "sft.lora.bias must be one of none, all, lora_only, got 'some'"),
        ("sft.lora.layers_to_transform=first", "sft.lora.layers_to_transform expects"),
        ("sft.lora.task_type=SEQ_CLS", "sft.lora.task_type is set by zephyr-train"),
        ("sft.lora.r=0", "sft.lora.r must be a positive rank"),
    ],
)
def test_bad_lora_values(override, message):
    with pytest.raises(UserError) as err:
        load_recipe(SMOKE, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_both_spellings_of_one_setting():
    with pytest.raises(UserError, match="sft.lora.alpha and sft.lora.lora_alpha are the same setting"):
        load_recipe(SMOKE, ["sft.lora.lora_alpha=8", "sft.lora.alpha=8"])


def test_handbook_maps_dora_and_rslora():
    raw = {"model_name_or_path": "builtin:tiny-mistral", "use_peft": True, "lora_r": 8, "use_dora": True,
           "use_rslora": True, "dataset_mixer": {"builtin:ultrachat-sample": 1.0}}
    recipe, warnings = to_recipe(raw, "sft", "config.yaml")
    lora = build_recipe(recipe, "config.yaml").stage("sft").lora
    assert lora.get("use_dora") is True and lora.get("use_rslora") is True and lora.r == 8
    assert not [w for w in warnings if "dora" in w or "rslora" in w]


def test_peft_refusal_is_one_line_before_anything_is_written(tmp_path):
    """PEFT's own __post_init__ rules run at the start of a stage (`before_stage`), before the output directory
    is touched; the CLI turns the UserError into one line and exit 2 (tests/test_cli_errors.py)."""
    from zephyr_train.preflight.check import before_stage

    out = tmp_path / "run"
    recipe = load_recipe(SMOKE, ["sft.lora.use_dora=true", "sft.lora.lora_bias=true", f"output_dir={out}"])
    with pytest.raises(UserError) as err:
        before_stage(recipe, ("sft",))
    assert "sft.lora is refused by PEFT's LoraConfig" in str(err.value) and "\n" not in str(err.value)
    assert "lora_bias=True is not supported for DoRA" in str(err.value)
    assert not out.exists()


@pytest.mark.slow
def test_dora_sft_then_rslora_dpo_hand_over(tmp_path):
    """DoRA for SFT, rsLoRA for DPO: the SFT adapter is merged, DPO starts from it at ln 2, the final model merges.
    Both stages use a TRL family's template (qwen2_5, ChatML) with its training twin; the models keep the
    inference form."""
    from zephyr_train.pipeline.run import run_stage
    from zephyr_train.preflight.check import before_stage

    out = tmp_path / "run"
    recipe = load_recipe(SMOKE, ["sft.max_steps=2", "sft.max_length=128", "sft.eval=null", "sft.lora.r=4",
                                 "sft.lora.use_dora=true", "dpo.max_steps=2", "dpo.lora.r=4",
                                 "dpo.lora.use_rslora=true", "dpo.eval.max_samples=4", "dpo.logging_steps=1",
                                 "dpo.max_length=128", "chat_template=qwen2_5", f"output_dir={out}"])
    before_stage(recipe, ("sft", "dpo"))
    sft = run_stage(recipe, "sft")
    dpo = run_stage(recipe, "dpo")
    assert sft.tokens_trained > 0  # the qwen2_5 twin's {% generation %} spans gave assistant labels
    sft_adapter = json.loads((out / "sft" / "adapter_config.json").read_text())
    dpo_adapter = json.loads((out / "dpo" / "adapter_config.json").read_text())
    assert sft_adapter["use_dora"] is True and sft_adapter["use_rslora"] is False
    assert dpo_adapter["use_rslora"] is True and dpo_adapter["use_dora"] is False
    assert dpo_adapter["base_model_name_or_path"] == "sft/merged"  # relative to the run folder (inference/portable.py)
    assert dpo.train_loss_first == pytest.approx(math.log(2), abs=1e-3)
    assert (out / "dpo" / "merged" / "config.json").exists()
    from transformers import AutoTokenizer

    from zephyr_train.data.chat_template import trl_pair

    final = AutoTokenizer.from_pretrained(out / "dpo" / "merged")
    assert final.chat_template == trl_pair("qwen2_5")[0]
    assert final.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True).endswith("<|im_start|>assistant\n")
