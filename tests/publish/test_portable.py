"""A run folder that is moved or copied still loads: adapters name their base relative to the run folder
(or by Hub id), and `AutoPeftModelForCausalLM`, `pipeline` and our own loader find it. Built from the tiny
model and a random LoRA adapter (no training needed), laid out as a LoRA run leaves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import SMOKE
from zephyr_train.inference import portable
from zephyr_train.publish import stage_cards


def test_portable_base_rules(tmp_path):
    run = tmp_path / "run"
    (run / "sft" / "merged").mkdir(parents=True)
    assert portable.portable_base(str(run / "sft" / "merged"), run) == "sft/merged"
    assert portable.portable_base(str(run / "sft" / "merged"), run, hub_id="me/zephyr-sft-merged") == \
        "me/zephyr-sft-merged"
    outside = tmp_path / "base"
    outside.mkdir()
    assert portable.portable_base(str(outside), run) == str(outside.resolve())  # nothing relative could follow it
    assert portable.portable_base("mistralai/Mistral-7B-v0.1", run) == "mistralai/Mistral-7B-v0.1"


def test_moved_run_folder_still_loads(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    run = tmp_path / "made-here" / "run"
    merged = run / "sft" / "merged"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(merged)  # PEFT records this absolute path as the base
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter.save_pretrained(run / "dpo")
    tokenizer.save_pretrained(run / "dpo")
    config_file = run / "dpo" / "adapter_config.json"
    assert Path(json.loads(config_file.read_text())["base_model_name_or_path"]).is_absolute()
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        expected = adapter(ids).logits

    from zephyr_train.stages import load_recipe

    recipe = load_recipe(SMOKE, [f"output_dir={run}", "sft.lora.r=4", "dpo.lora.r=4"])
    cards = stage_cards.finish_stage(recipe, "dpo", run / "dpo")  # what a finished stage does
    assert json.loads(config_file.read_text())["base_model_name_or_path"] == "sft/merged"
    assert cards == [run / "dpo" / "README.md"]
    card = cards[0].read_text()
    assert "sft/merged" in card and str(tmp_path) not in card and "[More Information Needed]" not in card
    assert "built-in test model" in card
    moved = tmp_path / "elsewhere" / "run-copy"
    shutil.copytree(run, moved)
    shutil.rmtree(tmp_path / "made-here")  # the original is gone: nothing may point into it

    loaded = portable.load_model(moved / "dpo")  # our loader (chat, report), from any working directory
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, expected, atol=1e-5)
    monkeypatch.chdir(moved)  # transformers and PEFT resolve a relative base from the run folder
    peft_model = AutoPeftModelForCausalLM.from_pretrained("dpo")
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, expected, atol=1e-5)
    generate = pipeline("text-generation", model=str(moved / "sft" / "merged"))
    assert isinstance(generate("Hello", max_new_tokens=3)[0]["generated_text"], str)
