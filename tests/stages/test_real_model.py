"""The whole pipeline on a real pretrained model: SFT then DPO on SmolLM2-135M-Instruct (the packaged GGUF,
its own ChatML template with its default system prompt, reply spans derived from the template), at a size
that keeps the suite's time. A short run on the bundled data must not break the model: plain facts stay the
most likely continuation, at about the same log-probability, and `chat` answers from the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.test_packaged import fact_scores
from zephyr_train import run_files
from zephyr_train.stages import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-135m" / "cpu.yaml"


@pytest.mark.slow
def test_sft_then_dpo_keeps_the_facts(tmp_path, smollm2_dir, base_fact_scores, capsys):
    from zephyr_train.cli import main
    from zephyr_train.pipeline.run import run_stage

    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "sft.max_steps=2", "sft.max_length=128",
                                  "sft.per_device_train_batch_size=2", "sft.eval=null", "dpo.max_steps=2",
                                  "sft.datasets.0.weight=0.02", "dpo.datasets.0.weight=0.02",
                                  "dpo.max_length=128", "dpo.max_prompt_length=64", "dpo.eval.max_samples=2",
                                  "dpo.per_device_eval_batch_size=2"])
    for kind in ("sft", "dpo"):  # `run` without its report's sample answers (the report is tested elsewhere)
        run_stage(recipe, kind)
    sft = json.loads((tmp_path / "sft" / run_files.SUMMARY).read_text())
    dpo = json.loads((tmp_path / "dpo" / run_files.SUMMARY).read_text())
    assert sft["global_step"] == 2 and 0 < sft["train_loss_first"] < 5  # a pretrained model's loss, not ln(49152)
    assert dpo["held_out_after"]["pairs"] == 2 and dpo["patches"]["prompt_length"] == "applied"
    final = tmp_path / "dpo"
    assert (final / "chat_template.jinja").read_text() == (smollm2_dir / "chat_template.jinja").read_text()
    for (top1, after), (_, before) in zip(fact_scores(final), base_fact_scores, strict=True):
        assert top1 and after > before - 0.5, (after, before)
    capsys.readouterr()
    main(["chat", str(final), "--greedy", "--max-new-tokens", "12", "--prompt", "What is the capital of Japan?"])
    assert "Tokyo" in capsys.readouterr().out
