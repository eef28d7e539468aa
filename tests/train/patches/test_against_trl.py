"""Each TRL patch against TRL's own unpatched path, through the real trainers: the same batch, the same
weights, the loss and every parameter's gradient equal within a stated tolerance (fp32 on this CPU).

The trainers are built as the stages build them, through `patches.build_trainer`: once with a plan that
installs only the patch under test, once with `patches: false` (plain TRL).
"""

from __future__ import annotations

import json

import pytest

from zephyr_train.train import patches
from zephyr_train.train.patches.contract import Setup

LOSS_TOL = {"atol": 1e-5, "rtol": 1e-5}  # fp32, the same token set, sums in another order
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}


def loss_and_grads(trainer):
    """One training batch through TRL's `compute_loss`, then backward: (loss, {name: grad})."""
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def assert_same(patched, plain):
    import torch

    (loss_a, grads_a), (loss_b, grads_b) = patched, plain
    torch.testing.assert_close(loss_a, loss_b, **LOSS_TOL)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], **GRAD_TOL, msg=name)


def build(kind_patches, only, trainer_class, setup, **kwargs):
    """The trainer with just the patch `only` installed, or (None) with `patches: false`: plain TRL."""
    import dataclasses

    log: list[str] = []
    names, setup = ((only,), setup) if only else (kind_patches, dataclasses.replace(setup, enabled=False))
    chosen = patches.plan(names, setup, log.append)
    return patches.build_trainer(chosen, trainer_class, log.append, **kwargs), chosen.states


# --- SFT: packing, lm_head ------------------------------------------------------------------------------


def sft_trainer(tmp_path, tiny_model_dir, tokenizer, only, packing=True):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 4000, (n,), generator=g).tolist() for n in (30, 7, 22, 15, 40, 9, 12, 26)]
    train = datasets.Dataset.from_dict({"input_ids": rows})
    config = SFTConfig(output_dir=str(tmp_path / (only or "plain")), packing=packing, max_length=64, bf16=False,
                       per_device_train_batch_size=4, report_to="none", disable_tqdm=True, seed=0,
                       dataloader_drop_last=False, gradient_checkpointing=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return build(("packing", "lm_head"), only, SFTTrainer, Setup(device="cpu", attn_implementation="sdpa"),
                 model=model, args=config, train_dataset=train, processing_class=tokenizer)


@pytest.mark.slow
def test_packing_equals_trls_padding_free_batch(tmp_path, tiny_model_dir, tokenizer):
    """Packed rows kept as rows (our collator) against TRL's one flattened padding-free row: same tokens
    trained, same loss, same gradients; attention stays inside each example in both."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from zephyr_train.train.patches.packing import PackedRowsCollator

    ours, states = sft_trainer(tmp_path, tiny_model_dir, tokenizer, "packing")
    plain, plain_states = sft_trainer(tmp_path, tiny_model_dir, tokenizer, None)
    assert states["packing"] == "applied" and isinstance(ours.data_collator, PackedRowsCollator)
    assert ours.data_collator.pad_token_id == tokenizer.pad_token_id
    assert plain_states["packing"].startswith("skipped: patches: false")
    assert isinstance(plain.data_collator, DataCollatorForLanguageModeling)
    assert_same(loss_and_grads(ours), loss_and_grads(plain))


@pytest.mark.slow
def test_lm_head_equals_trls_fused_head(tmp_path, tiny_model_dir, tokenizer):
    """The dense head on labelled positions against TRL's fused head installed by SFTTrainer's own
    `add_fused_lm_head` call (torch tiles on a CPU)."""
    ours, states = sft_trainer(tmp_path, tiny_model_dir, tokenizer, "lm_head", packing=False)
    plain, _ = sft_trainer(tmp_path, tiny_model_dir, tokenizer, None, packing=False)
    assert states["lm_head"] == "applied"
    assert ours.model.forward.__func__.__qualname__.startswith("use_dense_lm_head")
    assert_same(loss_and_grads(ours), loss_and_grads(plain))


# --- DPO: dpo_log_probs, prompt_length ------------------------------------------------------------------


def dpo_trainer(tmp_path, tiny_model_dir, tokenizer, only, max_prompt_length=None, precompute=False):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from zephyr_train.data.builtin import dataset_dir
    from zephyr_train.data.chat_template import ZEPHYR
    from zephyr_train.data.mixture import clean_preferences

    rows = [json.loads(line) for line in
            (dataset_dir("builtin:ultrafeedback-sample") / "test_prefs.jsonl").read_text().splitlines()[:8]]
    pairs, _ = clean_preferences(datasets.Dataset.from_list(rows).select_columns(["chosen", "rejected"]))
    tokenizer.chat_template = ZEPHYR
    config = DPOConfig(output_dir=str(tmp_path / (only or "plain")), max_length=160, bf16=False, beta=0.1,
                       per_device_train_batch_size=4, report_to="none", disable_tqdm=True, seed=0,
                       precompute_ref_log_probs=precompute)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    setup = Setup(device="cpu", lm_head="dense", max_prompt_length=max_prompt_length,
                  bos_token_id=tokenizer.bos_token_id)
    return build(("dpo_log_probs", "prompt_length"), only, DPOTrainer, setup, model=model, args=config,
                 train_dataset=pairs, processing_class=tokenizer)


@pytest.mark.slow
def test_dpo_log_probs_equals_trls_fused_head(tmp_path, tiny_model_dir, tokenizer):
    """Packed pairs, completion positions only, installed through DPOTrainer's own `add_fused_lm_head`
    calls, against TRL's fused head on the padded batch: the DPO loss and its gradients."""
    from zephyr_train.train.patches import dpo_log_probs

    ours, states = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, "dpo_log_probs")
    plain, _ = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, None)
    assert states["dpo_log_probs"] == "applied" and dpo_log_probs.head_of(ours.model) == "dense"
    assert dpo_log_probs.head_of(plain.model) is None
    assert_same(loss_and_grads(ours), loss_and_grads(plain))
    assert dpo_log_probs.padding_fraction(ours.model) is not None  # the packed path really ran


@pytest.mark.slow
def test_prompt_length_cuts_what_trl_tokenized_and_nothing_else(tmp_path, tiny_model_dir, tokenizer):
    """TRL has no max_prompt_length: the patched trainer's pairs are TRL's own with each prompt's last
    N tokens kept (and its BOS); with a limit no prompt reaches, loss and gradients equal plain TRL's."""
    import torch

    cut, states = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, "prompt_length", max_prompt_length=12)
    plain, _ = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, None)
    assert states["prompt_length"] == "applied"
    bos = tokenizer.bos_token_id
    for ours, theirs in zip(cut.train_dataset, plain.train_dataset, strict=True):
        full = theirs["prompt_ids"]
        head = full[:1] if full[:1] == [bos] else []  # a leading BOS stays (here the template writes none)
        expected = full if len(full) <= 12 else head + full[len(full) - 12 + len(head):]
        assert ours["prompt_ids"] == expected
        assert ours["chosen_ids"] == theirs["chosen_ids"] and ours["rejected_ids"] == theirs["rejected_ids"]
    assert any(len(p) > 12 for p in plain.train_dataset["prompt_ids"])  # the limit did cut something
    loose, _ = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, "prompt_length", max_prompt_length=10_000)
    assert loose.train_dataset["prompt_ids"] == plain.train_dataset["prompt_ids"]
    (a, grads_a), (b, grads_b) = loss_and_grads(loose), loss_and_grads(plain)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
