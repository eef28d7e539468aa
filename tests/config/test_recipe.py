"""Recipe loading: schema from the installed TRL, overrides, types, errors, resolved copy, no heavy imports."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT, SMOKE
from zephyr_train.config.recipe import fingerprint, save_resolved
from zephyr_train.config.trainer_fields import coerce
from zephyr_train.errors import UserError
from zephyr_train.stages import load_recipe


def write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_smoke_recipe_and_overrides():
    recipe = load_recipe(SMOKE, ["sft.learning_rate=2e-4", "sft.lora.r=8", "output_dir=/tmp/x"])
    assert recipe.stage("sft").trainer["learning_rate"] == pytest.approx(2e-4)
    assert recipe.stage("sft").lora.r == 8 and recipe.stage("sft").lora.alpha == 16
    assert recipe.output_dir == "/tmp/x"
    assert recipe.stage_dir("sft").as_posix() == "/tmp/x/sft"
    assert recipe.stage("sft").datasets[0].path == "builtin:ultrachat-sample"
    assert recipe.stage("sft").eval.split == "test_sft"


def test_overrides_index_lists_and_keep_text():
    recipe = load_recipe(SMOKE, ["sft.datasets.0.weight=0.5", "sft.run_name=a:[b", "sft.datasets.0.columns.messages=c"])
    first = recipe.stage("sft").datasets[0]
    assert first.weight == 0.5 and first.columns == {"messages": "c"}
    assert recipe.stage("sft").trainer["run_name"] == "a:[b"
    with pytest.raises(UserError, match=r"sft.datasets is a list of 1; index it from 0"):
        load_recipe(SMOKE, ["sft.datasets.3.weight=0.5"])
    with pytest.raises(UserError, match="model.dtype is not a section"):
        load_recipe(SMOKE, ["model.dtype.x=1"])


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads 5e-7 (no dot) as a string; the schema says float, so it is converted
    text = SMOKE.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 5e-7")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.stage("sft").trainer["learning_rate"] == 5e-7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.learnig_rate=1e-4", "unknown key 'sft.learnig_rate'; did you mean 'learning_rate'?"),
        ("sft.learning_rate=fast", "sft.learning_rate expects float, got 'fast'"),
        ("modle.dtype=float32", "unknown key 'modle'"),
        ("model.dtype=float64", "model.dtype must be one of"),
        ("sft.warmup_ratio=0.1", "it is now warmup_steps"),
        ("sft.packing_strategy=best", "must be one of bfd, bfd_split, wrapped"),
        ("model.quantization.load_in_4bit=true", "add a sft.lora section"),
        ("sft.lora.rank=8", "unknown key 'sft.lora.rank' (not a field of the installed PEFT's LoraConfig); "
                             "did you mean 'r'?"),
        ("sft.eval.fraction=0.1", "exactly one of split"),
        ("sft.model_init_kwargs={}", "set from the recipe's model section"),
        ("sft.bf16=true", None),
        # values checked against TRL's own rules (tests/config/test_trainer_fields.py: the schema itself)
        (["dpo.loss_type=[foo]"], "dpo.loss_type has 'foo'; each item must be one of sigmoid, hinge, ipo"),
        (["dpo.loss_type=fooo"], "dpo.loss_type has 'fooo'"),
        (["dpo.loss_weights=[0.5, 0.5]"], "dpo.loss_weights has 2 weights for 1 loss_type entries (sigmoid)"),
        (["dpo.loss_weights=[a]"], "dpo.loss_weights expects float"),
        (["sft.optim=adamw"], "sft.optim must be one of adamw_torch"),
        (["sft.pad_to_multiple_of=eight"], "sft.pad_to_multiple_of expects an int or auto, got 'eight'"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors_naming_the_file(override, message):
    overrides = override if isinstance(override, list) else [override]
    if message is None:
        assert load_recipe(SMOKE, overrides).stage("sft").trainer["bf16"] is True
        return
    with pytest.raises(UserError) as err:
        load_recipe(SMOKE, overrides)
    assert message in str(err.value)
    assert str(err.value).startswith(str(SMOKE))
    assert "\n" not in str(err.value)


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(UserError, match=r"r.yaml: line \d+ is not valid YAML"):
        load_recipe(write(tmp_path, "model:\n  name_or_path: [oops\n"))


def test_gradient_checkpointing_alias_keeps_meaning():
    recipe = load_recipe(SMOKE, ["sft.gradient_checkpointing=true"])
    assert recipe.stage("sft").trainer["activation_checkpointing"] is True


def test_resolved_recipe_has_no_secrets(tmp_path):
    token = "hf_" + "a1B2" * 8
    recipe = load_recipe(SMOKE, [f"sft.hub_token={token}", "sft.run_name=mine"])
    path = save_resolved(recipe, tmp_path, [f"sft.hub_token={token}"])
    text = path.read_text()
    assert token not in text and "<redacted>" in text
    resolved = yaml.safe_load(text)
    assert resolved["sft"]["run_name"] == "mine"
    # the resolved recipe is itself a valid recipe giving the same settings
    again = load_recipe(path)
    assert fingerprint(again, "sft")["digest"] == fingerprint(recipe, "sft")["digest"]


def test_fingerprint_ignores_logging_but_not_learning_rate():
    base = fingerprint(load_recipe(SMOKE), "sft")["digest"]
    assert fingerprint(load_recipe(SMOKE, ["sft.logging_steps=1"]), "sft")["digest"] == base
    assert fingerprint(load_recipe(SMOKE, ["sft.learning_rate=1e-5"]), "sft")["digest"] != base


def test_coerce():
    assert coerce("3", "int") == 3 and coerce(3, "float") == 3.0
    assert coerce("false", "bool | None") is False
    assert coerce("null", "int | None") is None
    with pytest.raises(ValueError):
        coerce("many", "int")
    with pytest.raises(ValueError):
        coerce([1], "float")


def test_every_shipped_recipe_validates():
    recipes = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert len(recipes) >= 3
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.stages and all(stage.datasets for stage in recipe.stages), path  # ORPO: one stage, no SFT
