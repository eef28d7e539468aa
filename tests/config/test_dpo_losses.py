"""Every DPO loss_type the installed TRL implements runs on the tiny model, and a weighted combination
is the weighted sum of its parts.

One trainer per loss, built in-process (no CLI run each), 2 steps on 4 bundled pairs. At step 1 the
policy is the reference (a fresh copy of the same weights), so each loss is a fixed function of the same
log-ratios and a combination's first loss must equal the weighted sum of the single losses' first losses.
"""

from __future__ import annotations

import math

import pytest

from zephyr_train.data import builtin
from zephyr_train.stages import KINDS

LOSSES = KINDS["dpo"].fields()["loss_type"].item_choices
# What some losses need that the defaults do not give (TRL's DPOTrainer checks these).
EXTRA = {"exo_pair": {"label_smoothing": 1e-3}}


@pytest.fixture(scope="module")
def pairs():
    import datasets

    from zephyr_train.data.mixture import clean_preferences

    path = builtin.dataset_dir("builtin:ultrafeedback-sample") / "train_prefs.jsonl"
    raw = datasets.load_dataset("json", data_files=str(path), split="train").select(range(4))
    return clean_preferences(raw.select_columns(["prompt", "chosen", "rejected"]))[0]


def first_loss(model_dir, pairs, tmp_path, loss_type: list[str], weights: list[float] | None = None,
               **extra) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    args = DPOConfig(output_dir=str(tmp_path / "_".join(loss_type)), loss_type=loss_type, loss_weights=weights,
                     max_steps=2, per_device_train_batch_size=2, logging_steps=1, logging_first_step=True,
                     report_to="none", save_strategy="no", use_cpu=True, bf16=False, max_length=128,
                     learning_rate=1e-3, seed=0, data_seed=0, disable_tqdm=True, **extra)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=pairs,
                         processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    return losses[0]


@pytest.mark.slow
def test_every_loss_type_runs_and_a_combination_is_the_weighted_sum(tiny_model_dir, pairs, tmp_path):
    assert len(LOSSES) >= 10  # read from DPOTrainer's source; TRL 1.16 has 15
    single = {}
    for loss in LOSSES:
        single[loss] = first_loss(tiny_model_dir, pairs, tmp_path, [loss], **EXTRA.get(loss, {}))
        assert math.isfinite(single[loss]), (loss, single[loss])
    assert single["sigmoid"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    # MPO-style combination (TRL's docs): sigmoid + bco_pair + sft with weights 0.8 / 0.2 / 1.0
    combo, weights = ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]
    combined = first_loss(tiny_model_dir, pairs, tmp_path, combo, weights)
    expected = sum(w * single[name] for name, w in zip(combo, weights, strict=True))
    assert combined == pytest.approx(expected, rel=1e-3), {"single": single, "combined": combined}


RULES = [
    ({"loss_type": ["exo_pair"]}, ValueError, "dpo.loss_type exo_pair needs dpo.label_smoothing > 0"),
    ({"loss_type": ["bco_pair"], "f_divergence_type": "js_divergence"}, ValueError,
     "dpo.f_divergence_type=js_divergence works only with the losses"),
    ({"loss_type": ["aot"], "use_weighting": True}, NotImplementedError,
     "dpo.use_weighting is not implemented for the aot losses"),
]


@pytest.mark.parametrize(("settings", "trl_error", "ours"), RULES)
def test_trainer_rules_are_one_line_errors_before_loading(settings, trl_error, ours):
    """What DPOTrainer refuses after the model has loaded, the recipe refuses when it is read."""
    from tests.conftest import SMOKE
    from zephyr_train.errors import UserError
    from zephyr_train.stages import load_recipe

    overrides = [f"dpo.{k}={v if not isinstance(v, list) else '[' + ','.join(v) + ']'}" for k, v in settings.items()]
    with pytest.raises(UserError, match=ours.replace("[", r"\[")):
        load_recipe(SMOKE, overrides)


@pytest.mark.slow
@pytest.mark.parametrize(("settings", "trl_error", "ours"), RULES)
def test_trl_refuses_what_the_recipe_refuses(settings, trl_error, ours, tiny_model_dir, pairs, tmp_path):
    """The same settings given to DPOTrainer itself: it refuses them too (at construction or its first step), so
    the recipe's rules are TRL's, not stricter ones."""
    settings = dict(settings)
    with pytest.raises(trl_error):
        first_loss(tiny_model_dir, pairs, tmp_path, settings.pop("loss_type"), **settings)
