"""The recipe schema against the real TRL dataclasses: every field, its default, and what __post_init__ does.

The schema is read from TRL's source with `ast` (no torch at check time); these tests import the real
classes and compare, so a TRL upgrade that adds, renames or changes a field fails here the same day.
"""

from __future__ import annotations

import dataclasses
import enum

import pytest

from tests.conftest import SMOKE
from zephyr_train.config.trainer_fields import check_value
from zephyr_train.stages import KINDS, load_recipe


def _real(stage: str) -> type:
    from trl import DPOConfig, SFTConfig

    return {"sft": SFTConfig, "dpo": DPOConfig}[stage]


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_schema_names_and_defaults_match_the_real_dataclass(stage):
    real = {f.name: f for f in dataclasses.fields(_real(stage)) if not f.name.startswith("_")}
    ours = KINDS[stage].fields()
    assert set(ours) == set(real)
    for name, field in real.items():
        if field.default is not dataclasses.MISSING:
            expected = _plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            expected = _plain(field.default_factory())
        else:
            continue
        if ours[name].computed:
            continue  # computed when the class is defined (optim's depends on the torch version): kept as spelled
        assert ours[name].default == expected, name


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_post_init_coercions_match_the_real_dataclass(stage, tmp_path):
    """Every field we wrap into a list, or check against an enum, is wrapped / converted the same way by TRL."""
    cls, fields = _real(stage), KINDS[stage].fields()
    wrapped = [f for f in fields.values() if f.wraps]
    assert wrapped, "no single-value-to-list coercion found in TRL's __post_init__"
    for field in wrapped:
        value = (field.item_choices or ("none",))[0] if field.name != "report_to" else "none"
        ours = check_value(field, value)
        real = getattr(cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, **{field.name: value}), field.name)
        assert ours == [value] or field.name == "report_to", field.name  # report_to's str stays a str here
        assert real == [value] or real == [], field.name  # TRL: a list (report_to "none" becomes [])
    enums = {"lr_scheduler_type", "optim", "eval_strategy", "save_strategy", "logging_strategy", "hub_strategy"}
    for name in enums:
        members = {m.value for m in _enum_of(fields[name].annotation)}
        assert set(fields[name].choices) == members, name


def _enum_of(annotation) -> type:
    import transformers.trainer_utils as tu
    import transformers.training_args as ta

    name = annotation.split(" |")[0]
    return getattr(tu, name, None) or getattr(ta, name)


def test_dpo_loss_types_are_what_the_trainer_implements():
    """The items come from DPOTrainer's branches; DPOConfig's help text names the same set."""
    import trl.trainer.dpo_config as source

    losses = KINDS["dpo"].fields()["loss_type"].item_choices
    help_text = next(f for f in dataclasses.fields(source.DPOConfig) if f.name == "loss_type").metadata["help"]
    assert set(losses) == {w.strip("`'") for w in help_text.split(": ")[1].split(". If")[0].split(", ")}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dpo.loss_type=ipo", ["ipo"]),
        ("dpo.loss_type=[sigmoid, sft]", ["sigmoid", "sft"]),
        ("sft.pad_to_multiple_of=8", 8),
        ("sft.pad_to_multiple_of=auto", "auto"),
        ("sft.lr_scheduler_type=cosine_with_min_lr", "cosine_with_min_lr"),
    ],
)
def test_values_taken_as_trl_takes_them(override, expected):
    recipe = load_recipe(SMOKE, [override])
    stage, key = override.split("=")[0].split(".")
    assert recipe.stage(stage).trainer[key] == expected
