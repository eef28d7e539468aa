"""Held-out DPO figures from one pass equal the two-pass ones; the reference plan; prompts cut before precompute."""

from __future__ import annotations

import json
import math

import pytest

from zephyr_train.stages import dpo
from zephyr_train.train.patches import dpo_log_probs, prompt_length


def build_trainer(tmp_path, tiny_model_dir, tokenizer, **overrides):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from zephyr_train.data.builtin import dataset_dir
    from zephyr_train.data.chat_template import ZEPHYR
    from zephyr_train.data.mixture import clean_preferences

    rows = [json.loads(line) for line in
            (dataset_dir("builtin:ultrafeedback-sample") / "test_prefs.jsonl").read_text().splitlines()[:40]]
    pairs, _ = clean_preferences(datasets.Dataset.from_list(rows).select_columns(["chosen", "rejected"]))
    train, evaluation = pairs.select(range(16)), pairs.select(range(16, 40))
    tokenizer.chat_template = ZEPHYR
    settings = {"max_length": 192, "bf16": False, "per_device_eval_batch_size": 8, "report_to": "none", "beta": 0.1,
                "disable_tqdm": True, **overrides}
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    limit = settings.pop("max_prompt_length", None)
    with dpo_log_probs.installed("dense", "cpu"), prompt_length.cutting(limit, tokenizer.bos_token_id):
        trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=str(tmp_path), **settings), train_dataset=train,
                             eval_dataset=evaluation, processing_class=tokenizer)
    return trainer


def two_passes(trainer):
    """What `held_out` replaced: per-pair margins in one pass, then TRL's `evaluate()` for the loss."""
    import torch

    margins = []
    for batch in trainer.get_eval_dataloader():
        batch = trainer._prepare_inputs(batch)
        ref = trainer.compute_ref_log_probs(trainer.ref_model, batch)
        reference, trainer.ref_model = trainer.ref_model, trainer.model
        policy = trainer.compute_ref_log_probs(trainer.model, batch)
        trainer.ref_model = reference
        margins.append(trainer.beta * ((policy[0] - ref[0]) - (policy[1] - ref[1])))
    return torch.cat(margins), trainer.evaluate()


def test_one_pass_held_out_figures_equal_the_two_pass_ones(tmp_path, tiny_model_dir, tokenizer):
    import torch

    trainer = build_trainer(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=False)
    before = dpo.held_out(trainer)
    assert before.ties == 1.0 and before.accuracy == 0.5 and before.pairs == 24
    assert before.loss == pytest.approx(math.log(2), abs=1e-6)
    with torch.no_grad():  # a policy that differs from the reference, as after training
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    after = dpo.held_out(trainer)
    margins, metrics = two_passes(trainer)
    assert after.ties == 0.0
    assert after.accuracy == pytest.approx((margins > 0).float().mean().item())
    assert after.accuracy == pytest.approx(metrics["eval_rewards/accuracies"])  # no ties: TRL's strict count
    assert after.margin == pytest.approx(metrics["eval_rewards/margins"], abs=1e-5)  # 3 equal batches of 8
    assert after.loss == pytest.approx(metrics["eval_loss"], abs=1e-5)
    assert after.loss != pytest.approx(math.log(2), abs=1e-3)


def test_precomputed_reference_sees_the_cut_prompts(tmp_path, tiny_model_dir, tokenizer):
    trainer = build_trainer(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=True, max_prompt_length=24)
    assert trainer.ref_model is None and "ref_chosen_logps" in trainer.train_dataset.column_names
    assert max(len(ids) for ids in trainer.train_dataset["prompt_ids"]) <= 24
    assert max(len(ids) for ids in trainer.eval_dataset["prompt_ids"]) <= 24
    figures = dpo.held_out(trainer)  # refs from the batch, the policy untouched: every pair ties
    assert figures.ties == 1.0 and figures.loss == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("args, n_train, precompute", [
    ({}, 100, True),  # every pair seen: one reference pass, no copy held
    ({"max_steps": 2, "per_device_train_batch_size": 8}, 100, False),  # 16 of 100 pairs: the copy is cheaper
    ({"max_steps": 13, "per_device_train_batch_size": 8}, 100, True),
    ({"precompute_ref_log_probs": False}, 100, False),  # the recipe decides when it says
    ({"sync_ref_model": True}, 100, False),
])
def test_reference_plan_for_full_fine_tuning(args, n_train, precompute):
    from zephyr_train.config.recipe import Stage

    plan = dpo.reference_plan(Stage(dpo.KIND, trainer=dict(args)), args, n_train, world=1)
    assert bool(args.get("precompute_ref_log_probs")) is precompute
    assert ("precomputed" in plan) is precompute


def test_reference_plan_for_lora_is_the_disabled_adapter():
    from zephyr_train.config.recipe import Lora, Stage

    args: dict = {}
    assert "adapter disabled" in dpo.reference_plan(Stage(dpo.KIND, lora=Lora()), args, 10, world=1)
    assert "precompute_ref_log_probs" not in args
