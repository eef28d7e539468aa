"""`zephyr-train run`: LoRA SFT -> merge -> LoRA DPO hand-over, skipping finished stages, re-running changed ones."""

from __future__ import annotations

import json
import math

import pytest

from .conftest import cli

pytestmark = pytest.mark.slow
STEPS = ["sft.max_steps=10", "sft.learning_rate=3e-3", "sft.max_length=256", "sft.eval=null",
         "sft.lora.r=8", "dpo.lora.r=8", "dpo.max_steps=4", "dpo.eval.max_samples=16", "dpo.logging_steps=1"]


def test_lora_handover_skip_and_rerun(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    first = cli("run", "recipes/smoke.yaml", *STEPS, f"output_dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "dpo"} and summary["final_model"] == str(out / "dpo")

    # the DPO adapter sits on the merged SFT model, never on the raw base
    merged = out / "sft" / "merged"
    adapter = json.loads((out / "dpo" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(merged)
    assert summary["stages"]["dpo"]["train_loss_first"] == pytest.approx(math.log(2), abs=1e-3)

    # the merged model computes what base + SFT adapter computes
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "sft")
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
        sft_logits = lora(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    assert not torch.allclose(sft_logits, base_logits, atol=1e-3)  # SFT did change the model
    torch.testing.assert_close(merged_logits, sft_logits, rtol=1e-4, atol=1e-4)

    again = cli("run", "recipes/smoke.yaml", *STEPS, f"output_dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished under the same settings") == 2

    changed = cli("run", "recipes/smoke.yaml", *STEPS, "dpo.beta=0.05", f"output_dir={out}")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "sft: finished under the same settings" in changed.stdout
    assert "dpo: " in changed.stdout and "running the stage again from scratch" in changed.stdout
