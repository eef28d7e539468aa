"""The whole pipeline on a real pretrained model: SFT then DPO on SmolLM2-135M-Instruct (the packaged GGUF,
its own ChatML template with its default system prompt, reply spans derived from the template), at a size
that keeps the suite's time. A short run on the bundled data must not break the model: greedy answers to
plain factual prompts still carry the facts, then `chat` answers from the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.test_packaged import FACTS, greedy_answers
from zephyr_train import run_files
from zephyr_train.stages import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-135m" / "cpu.yaml"


@pytest.mark.slow
def test_sft_then_dpo_keeps_the_facts(tmp_path, capsys):
    from zephyr_train.cli import main
    from zephyr_train.pipeline.run import run_pipeline

    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "sft.max_steps=2", "sft.max_length=128",
                                  "sft.per_device_train_batch_size=2", "sft.eval.max_samples=4", "dpo.max_steps=2",
                                  "sft.datasets.0.weight=0.02", "dpo.datasets.0.weight=0.02",
                                  "dpo.max_length=128", "dpo.max_prompt_length=64", "dpo.eval.max_samples=4"])
    run_pipeline(recipe)
    sft = json.loads((tmp_path / "sft" / run_files.SUMMARY).read_text())
    dpo = json.loads((tmp_path / "dpo" / run_files.SUMMARY).read_text())
    assert sft["global_step"] == 2 and 0 < sft["train_loss_first"] < 5  # a pretrained model's loss, not ln(49152)
    assert dpo["held_out_after"]["pairs"] == 4 and dpo["patches"]["prompt_length"] == "applied"
    final = tmp_path / "dpo"
    saved = json.loads((final / "tokenizer_config.json").read_text())
    assert "chat_template" in saved or (final / "chat_template.jinja").is_file()  # its own template, kept
    for (question, fact), answer in zip(FACTS, greedy_answers(final, [q for q, _ in FACTS]), strict=True):
        assert fact.lower() in answer.lower(), (question, answer)
    assert main(["chat", str(final), "--greedy", "--max-new-tokens", "12",
                 "--prompt", "What is the capital of France?"]) in (0, None)
    assert "Paris" in capsys.readouterr().out
