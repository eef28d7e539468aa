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


SMALL = ["sft.max_steps=1", "sft.max_length=128", "sft.per_device_train_batch_size=2", "sft.eval=null",
         "sft.datasets.0.weight=0.01", "dpo.datasets.0.weight=0.01", "dpo.max_steps=1", "dpo.max_length=128",
         "dpo.max_prompt_length=64", "dpo.eval.max_samples=2", "dpo.per_device_eval_batch_size=2"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lora", "qlora"])
def test_lora_and_qlora_then_the_tools_on_the_result(tmp_path, smollm2_dir, variant, capsys):
    """LoRA (fp32 base) and QLoRA (real bitsandbytes 4-bit base) SFT then DPO on the real model; the merged
    result answers plain facts in `chat`, exports to GGUF, and gives MT-Bench answers in FastChat's format."""
    from zephyr_train.cli import main

    quant = ["model.quantization.load_in_4bit=true", "model.quantization.bnb_4bit_compute_dtype=float32"] \
        if variant == "qlora" else []
    from zephyr_train.pipeline.run import run_stage

    recipe = load_recipe(RECIPE, [*SMALL, *quant, "sft.lora.r=8", "dpo.lora.r=8", f"output_dir={tmp_path}"])
    for kind in ("sft", "dpo"):  # `run` without its report's sample answers (the report is tested elsewhere)
        run_stage(recipe, kind)
    dpo = json.loads((tmp_path / "dpo" / run_files.SUMMARY).read_text())
    assert dpo["adapter"] and (tmp_path / "dpo" / "adapter_model.safetensors").exists()
    final = Path(dpo["merged_model_dir"])
    capsys.readouterr()
    main(["chat", str(final), "--greedy", "--max-new-tokens", "12", "--prompt", "What is the capital of France?"])
    assert "Paris" in capsys.readouterr().out
    if variant == "qlora":
        return  # the tools below read a merged model the same way whichever way it was trained
    gguf = tmp_path / "model.gguf"
    assert main(["export", str(final), "--gguf", str(gguf), "--quant", "q8_0"]) in (0, None) and gguf.stat().st_size
    questions = tmp_path / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": [
        "Name the capital of France.", "And of Japan?"]}) + "\n")
    out = tmp_path / "mt-bench"
    assert main(["eval", str(final), "--bench", "mt-bench", "--no-judge", "--questions", str(questions),
                 "--max-new-tokens", "8", "--out", str(out)]) in (0, None)
    answer = json.loads(next((out / "model_answer").glob("*.jsonl")).read_text())
    assert answer["question_id"] == 81 and len(answer["choices"][0]["turns"]) == 2
