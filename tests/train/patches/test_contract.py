"""The patch registry's contract: each patch's private TRL names hold on the installed TRL, and when one
changes the user gets a printed, recorded fallback to plain TRL (speed patches) or a one-line error
(`prompt_length`, which changes what is trained) - never a silently wrong or silently absent patch."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from zephyr_train.errors import UserError
from zephyr_train.stages import KINDS
from zephyr_train.train import patches
from zephyr_train.train.patches import contract, dpo_log_probs, packing
from zephyr_train.train.patches.contract import Setup
from zephyr_train.train.patches.prompt_length import PATCH as PROMPT_LENGTH


def test_every_stage_patch_is_registered_and_its_contract_holds_on_the_installed_trl():
    used = [name for kind in KINDS.values() for name in kind.patches]
    assert sorted(set(used)) == sorted(patches.PATCHES)  # no patch outside a stage, none unregistered
    every_head = [Setup(lm_head=head, max_prompt_length=8) for head in dpo_log_probs.HEADS]
    for patch in patches.PATCHES.values():
        for setup in every_head:
            assert patch.problems(setup) == [], patch.name
            assert patch.problems(setup, static=True) == [], patch.name
    names = {need.what for setup in every_head for p in patches.PATCHES.values() for need in p.needs(setup)}
    assert {"trl.trainer.utils.FusedCausalLMOutput fields loss, log_probs, entropy, is_top1, label_mask",
            "trl.trainer.dpo_trainer.add_fused_lm_head(model, temperature, cast_lm_head_to_fp32, outputs)",
            "trl.kernels.ChunkedLogProbFunction.forward(" + ", ".join(dpo_log_probs.KERNEL_ARGS) + ")",
            "trl.kernels.chunked_logprob._use_triton",
            "trl.trainer.dpo_trainer.DPOTrainer._prepare_dataset(self, dataset)"} <= names
    assert len(dpo_log_probs.KERNEL_ARGS) == 9


def test_a_changed_signature_or_field_is_named():
    assert contract.parameters("trl.kernels.ChunkedLogProbFunction.forward", ("hidden", "weight"),
                               skip=0).problem().startswith("trl.kernels.ChunkedLogProbFunction.forward takes (ctx,")
    assert contract.fields("trl.trainer.utils.FusedCausalLMOutput", ("log_probs", "logits")).problem() == \
        "trl.trainer.utils.FusedCausalLMOutput has no field logits"
    assert contract.attribute("trl.trainer.utils.NoSuchThing").problem() == "trl.trainer.utils.NoSuchThing is gone"


def test_the_static_check_reads_source_without_importing(tmp_path, monkeypatch):
    """`check` reads TRL's source (importing TRL costs ~7 s); a changed signature there is an error line."""
    package = tmp_path / "fake_trl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dpo.py").write_text("class DPOTrainer:\n    def _prepare_dataset(self, data, processing_class):\n"
                                    "        raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    need = contract.parameters("fake_trl.dpo.DPOTrainer._prepare_dataset", ("self", "dataset"))
    assert need.static() == ("fake_trl.dpo.DPOTrainer._prepare_dataset takes (self, data, processing_class), "
                             "not (self, dataset)")
    assert "fake_trl.dpo" not in sys.modules
    # defined elsewhere (a base class, an import): only the import can tell, when the stage builds its trainer
    assert contract.parameters("fake_trl.dpo.DPOTrainer._gone", ("self",)).static() is None


def test_prompt_length_mismatch_is_one_line_error_naming_patch_and_version(monkeypatch):
    from trl.trainer.dpo_trainer import DPOTrainer

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", lambda self, data: data)  # a TRL that renamed the argument
    with pytest.raises(UserError) as err:
        patches.plan(("dpo_log_probs", "prompt_length"), Setup(max_prompt_length=512), print)
    message = str(err.value)
    assert "\n" not in message and message.startswith("patch prompt_length (dpo.max_prompt_length")
    assert "DPOTrainer._prepare_dataset takes (self, data), not (self, dataset)" in message
    assert "TRL 1.16" in message and "remove dpo.max_prompt_length" in message
    # not asked for, or every patch off: nothing to stop for
    unasked = patches.plan(("prompt_length",), Setup(), print)
    assert unasked.states == {"prompt_length": "skipped: no dpo.max_prompt_length"}
    off = patches.plan(("prompt_length",), Setup(enabled=False, max_prompt_length=512), print)
    assert off.states["prompt_length"] == f"skipped: {patches.OFF}"


def test_patches_false_prints_what_changes_beyond_speed():
    printed: list[str] = []
    patches.plan(("dpo_log_probs", "prompt_length"), Setup(enabled=False, max_prompt_length=512), printed.append)
    assert printed == ["patch prompt_length off: prompts are not cut to dpo.max_prompt_length; TRL cuts each "
                       "pair's end at max_length"]
    assert PROMPT_LENGTH.on_mismatch == "error" and all(
        p.on_mismatch == "fallback" for p in patches.PATCHES.values() if p is not PROMPT_LENGTH)


def test_check_reports_the_prompt_length_contract(monkeypatch):
    from tests.conftest import SMOKE
    from zephyr_train.stages import load_recipe

    recipe = load_recipe(SMOKE, ["dpo.max_prompt_length=64", "dpo.max_length=128"])
    rules = KINDS["dpo"].rules
    assert rules(recipe, recipe.stage("dpo")) == []
    broken = contract.Need("DPOTrainer._prepare_dataset", lambda: None, lambda: "DPOTrainer._prepare_dataset is gone")
    monkeypatch.setitem(patches.PATCHES, "prompt_length", dataclasses.replace(PROMPT_LENGTH, needs=lambda _: (broken,)))
    (error,) = rules(recipe, recipe.stage("dpo"))
    assert error.startswith(f"{SMOKE}: patch prompt_length") and "DPOTrainer._prepare_dataset is gone" in error


@pytest.mark.slow
def test_renamed_seq_lengths_falls_back_to_trls_collator(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """If TRL renamed `seq_lengths`, our collator would read a packed row as one sequence: TRL's stays."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tests.train.patches.test_against_trl import sft_trainer

    monkeypatch.setattr(packing, "SEQ_LENGTHS", "example_lengths")  # what we look for, as if TRL renamed it
    trainer, states = sft_trainer(tmp_path, tiny_model_dir, tokenizer, "packing")
    assert isinstance(trainer.data_collator, DataCollatorForLanguageModeling)
    assert states["packing"].startswith("skipped: TRL's packed dataset has no example_lengths column (it has ")
    assert states["packing"].endswith("plain TRL instead: same results, slower")


@pytest.mark.slow
def test_dpo_head_never_installed_is_recorded_not_claimed(tmp_path, tiny_model_dir, tokenizer, monkeypatch, capsys):
    """If TRL stops calling `add_fused_lm_head`, the patch never installs: recorded as skipped, and the head
    reported is TRL's own."""
    import contextlib

    from tests.train.patches.test_against_trl import dpo_trainer

    monkeypatch.setattr(dpo_log_probs, "installed", lambda *_: contextlib.nullcontext("dense"))
    trainer, states = dpo_trainer(tmp_path, tiny_model_dir, tokenizer, "dpo_log_probs")
    assert states["dpo_log_probs"].startswith("skipped: DPOTrainer.__init__ never called add_fused_lm_head")
    assert dpo_log_probs.head_of(trainer.model) is None
