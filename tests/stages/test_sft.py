"""End to end through the real CLI: full and QLoRA SFT (LoRA SFT: tests/train/test_pipeline.py),
resume rules, precision (2 processes: tests/distributed/)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, cli

pytestmark = pytest.mark.slow
# small batches of short rows where a test only needs a stage to train
FAST = ["sft.logging_steps=2", "sft.eval.max_samples=16", "sft.max_length=128", "sft.per_device_train_batch_size=2"]


def summary(out) -> dict:
    return json.loads((out / "sft" / "summary.json").read_text())


def test_full_sft_learns_and_keeps_recipe_precision(sft_then_dpo):
    """`zephyr-train sft`, 40 steps at learning rate 3e-3 (tests/stages/conftest.py)."""
    out, run = sft_then_dpo.out, sft_then_dpo.sft
    s = summary(out)
    assert s["global_step"] == 40
    assert s["train_loss_last"] < 0.75 * s["train_loss_first"]
    assert s["eval_loss"] is not None and s["tokens_trained"] > 0 and s["tokens_per_second"] > 0
    # a bf16 launcher config never silently overrides the recipe's fp32
    assert "the launcher asked for bf16 mixed precision; the recipe's fp32 is used" in run.stdout
    import torch

    args = torch.load(out / "sft" / "training_args.bin", weights_only=False)
    assert args.mixed_precision == "no" and not args.bf16
    # the saved model is a complete model with the public Zephyr template
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zephyr_train.data.chat_template import ZEPHYR

    model = AutoModelForCausalLM.from_pretrained(out / "sft")
    assert AutoTokenizer.from_pretrained(out / "sft").chat_template == ZEPHYR
    assert model.dtype == torch.float32
    assert (out / "sft" / "recipe.resolved.yaml").exists()
    assert "SFT done" in run.stdout and "train loss" in run.stdout


def test_qlora_loads_real_4bit_and_trains_both_stages(tmp_path):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    from zephyr_train.inference import modeling
    from zephyr_train.stages import load_recipe

    quant = ["model.quantization.load_in_4bit=true", "model.quantization.bnb_4bit_compute_dtype=float32",
             "sft.lora.r=8", "dpo.lora.r=8"]
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", quant)
    model = modeling.load_model(modeling.model_location(recipe.model, "r"), recipe.model)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 4 * 7 and layers[0].weight.quant_state.quant_type == "nf4"

    # QLoRA SFT -> adapter merged into the fp32 base -> QLoRA DPO on that, quantized to 4-bit again
    out = tmp_path / "qlora"
    run = cli("run", "recipes/smoke.yaml", *quant, "sft.max_steps=4", "dpo.max_steps=2", "dpo.max_length=128",
              "dpo.per_device_train_batch_size=2", "dpo.eval.max_samples=8", f"output_dir={out}", *FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "sft" / "adapter_model.safetensors").exists()
    assert summary(out)["train_loss_last"] is not None
    dpo = json.loads((out / "dpo" / "summary.json").read_text())
    assert dpo["train_loss_first"] == pytest.approx(0.6931, abs=2e-3)  # 4-bit policy vs its disabled adapter
    adapter = json.loads((out / "dpo" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sft/merged"  # relative to the run folder (inference/portable.py)
    final = AutoModelForCausalLM.from_pretrained(dpo["merged_model_dir"])  # full precision, no bitsandbytes
    assert final.dtype == torch.float32 and not any(isinstance(m, bnb.nn.Linear4bit) for m in final.modules())


def test_resume_finished_and_changed_settings(tmp_path):
    out = tmp_path / "resume"
    args = ["sft", "recipes/smoke.yaml", "sft.max_steps=4", "sft.save_strategy=steps", "sft.save_steps=2",
            f"output_dir={out}", *FAST]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]

    again = cli(*args)  # finished: never a silent zero-step run
    assert again.returncode == 2
    assert "already holds a finished sft run (4 steps" in again.stderr and "--overwrite" in again.stderr

    changed = cli(*args, "sft.learning_rate=5e-4")
    assert changed.returncode == 2
    assert "made with other settings (sft.learning_rate: 0.001 then, 0.0005 now)" in changed.stderr

    # interrupted after step 2: the last checkpoint is picked up under the same settings
    (out / "sft" / "summary.json").unlink()
    import shutil

    shutil.rmtree(out / "sft" / "checkpoint-4")
    resumed = cli(*args, "sft.logging_steps=1")  # logging is not a setting that changes the result
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / 'sft' / 'checkpoint-2'}" in resumed.stdout
    assert summary(out)["global_step"] == 4

    fresh = cli(*args, "sft.learning_rate=5e-4", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
