"""`zephyr-train run`: LoRA SFT -> merge -> LoRA DPO hand-over, skipping finished stages, re-running changed ones."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.slow
# small batches of short rows: the hand-over is checked here, not how much the model learns
STEPS = ["sft.max_steps=10", "sft.learning_rate=3e-3", "sft.max_length=128", "sft.per_device_train_batch_size=2",
         "sft.eval=null", "sft.lora.r=8", "dpo.lora.r=8", "dpo.max_steps=4", "dpo.eval.max_samples=16",
         "dpo.logging_steps=1", "dpo.max_length=128", "dpo.per_device_train_batch_size=2"]


def test_lora_handover_skip_and_rerun(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    first = cli("run", "recipes/smoke.yaml", *STEPS, f"output_dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "dpo"}
    assert summary["final_model"] == str(out / "dpo" / "merged") and summary["final_adapter"] == str(out / "dpo")

    # LoRA SFT saves an adapter of the recipe's rank on the attention and MLP projections
    sft_adapter = json.loads((out / "sft" / "adapter_config.json").read_text())
    assert sft_adapter["r"] == 8 and set(sft_adapter["target_modules"]) >= {"q_proj", "down_proj"}
    assert summary["stages"]["sft"]["adapter"] is True
    assert json.loads((out / "sft" / "summary.json").read_text())["adapter"] is True

    # the DPO adapter sits on the merged SFT model, never on the raw base
    merged = out / "sft" / "merged"
    adapter = json.loads((out / "dpo" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sft/merged"  # relative to the run folder: it can move
    assert merged.is_dir()
    dpo = summary["stages"]["dpo"]
    assert dpo["train_loss_first"] == pytest.approx(math.log(2), abs=1e-3)
    # before DPO the policy is the reference: every held-out pair ties, which counts as a coin flip
    assert dpo["held_out_before"]["ties"] == 1.0 and dpo["held_out_before"]["accuracy"] == 0.5
    assert "held-out preference accuracy 0.500 ->" in first.stdout  # both stages' figures at the end

    # the merged SFT model is the trained one (that a merged model computes what its adapter computes is checked
    # once, on `zephyr-train merge`, which runs the same merge: tests/publish/test_tools.py)
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # SFT did change the model
    assert json.loads((merged / "merged_from.json").read_text())["adapter"] == str(out / "sft")

    behaves_like_zephyr(out / "dpo" / "merged", out / "dpo")

    again = cli("run", "recipes/smoke.yaml", *STEPS, f"output_dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished under the same settings") == 2

    changed = cli("run", "recipes/smoke.yaml", *STEPS, "dpo.beta=0.05", f"output_dir={out}")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "sft: finished under the same settings" in changed.stdout
    assert "dpo: " in changed.stdout and "running the stage again from scratch" in changed.stdout


def behaves_like_zephyr(final, adapter_dir) -> None:
    """The final model is used exactly as people use HuggingFaceH4/zephyr-7b-beta."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(final), dtype=torch.float32)
    messages = [{"role": "system", "content": "You are a friendly chatbot."},
                {"role": "user", "content": "How do I brew green tea?"}]
    prompt = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|system|>\nYou are a friendly chatbot.</s>\n<|user|>\nHow do I brew green tea?</s>\n"
                      "<|assistant|>\n")
    eos = pipe.tokenizer.eos_token_id
    assert pipe.model.generation_config.eos_token_id in (eos, [eos])
    out = pipe(prompt, max_new_tokens=24, do_sample=False, return_full_text=False)
    assert len(pipe.tokenizer(out[0]["generated_text"], add_special_tokens=False).input_ids) <= 24
    # when the model emits </s>, generation ends there (a sampled EOS gets a huge bias to make it happen now)
    stopped = pipe(prompt, max_new_tokens=24, do_sample=False, return_full_text=False, sequence_bias={(eos,): 100.0})
    assert stopped[0]["generated_text"] == ""
    # the adapter alone loads onto the merged SFT model its config names (relative to the run folder, where
    # PEFT looks for it when started there): it computes what the adapter on that model, named by path, computes
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = pipe.tokenizer(prompt, return_tensors="pt").input_ids
    run = Path(adapter_dir).parent
    with torch.no_grad():
        on_sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "sft" / "merged"),
                                           str(adapter_dir))(ids).logits
    cwd = os.getcwd()
    os.chdir(run)
    try:
        with torch.no_grad():
            via_adapter = AutoPeftModelForCausalLM.from_pretrained(Path(adapter_dir).name)(ids).logits
    finally:
        os.chdir(cwd)
    torch.testing.assert_close(via_adapter, on_sft, rtol=1e-4, atol=1e-4)
