"""The stage console (train/console.py) on small inputs: compact log lines with numbers as numbers, the
banner's facts, Trainer-equal step counts, a library warning dropped at its logger only when it cannot apply,
and the collator count behind the console's tokens/s."""

from __future__ import annotations

import logging

from zephyr_train.stages import KINDS
from zephyr_train.train import console

INFO = {**console.kind_info(KINDS["sft"]), "model": "builtin:tiny-mistral", "params": 1_800_000,
        "trainable_params": 1_800_000,
        "weights_dtype": "float32", "compute": "float32", "device": "cpu", "processes": 1, "rows": 2000,
        "dropped": {"empty content": 3}, "eval_rows": 200, "per_device": 8, "accumulation": 2, "epochs": 1.0,
        "steps": 125, "max_length": 512, "packing": True, "out": "runs/smoke/sft", "resume": None}


def test_log_line_is_compact_with_numbers_as_numbers():
    logs = {"loss": 8.3412, "grad_norm": 2.831, "learning_rate": 0.0, "entropy": 8.292, "mean_token_accuracy": 0.0,
            "num_tokens": 512.0, "epoch": 0.01, "tokens_per_second": 5625.4}
    line = console.log_line("SFT", logs, 1, 100)
    assert line == ("SFT step 1/100 | loss 8.3412 | token_acc 0.000 | grad_norm 2.83 | entropy 8.292 | lr 0 | "
                    "tokens/s 5,625 | epoch 0.01")
    assert "'" not in line and "{" not in line and "num_tokens" not in line
    assert console.log_line("DPO", {"eval_loss": 0.69, "eval_rewards/accuracies": 0.5}, 13, 13) == \
        "DPO eval step 13/13 | eval_loss 0.6900 | eval_acc 0.50"
    assert console.log_line("SFT", {"train_runtime": 98.12, "train_loss": 4.2}, 100, 100) == \
        "SFT training ended, step 100/100 | mean_loss 4.2000 | runtime_s 98.1"


def test_banner_says_what_the_stage_will_do():
    text = console.banner(INFO)
    lines = text.splitlines()
    assert lines[0].startswith("== SFT: supervised fine-tuning")
    assert "builtin:tiny-mistral: 1.8M parameters, all trained" in text
    assert "float32 weights, float32 compute; device cpu, 1 process" in text
    assert "2,000 training conversations kept, 3 dropped (empty content: 3); 200 held out for eval" in text
    assert "125 optimizer steps" in text and "batch 8 x 2 accumulation x 1 process(es)" in text
    assert "up to 8,192 tokens per step (16 rows of 512, packed)" in text
    assert lines[-1] == "  output     runs/smoke/sft"
    lora = console.banner({**INFO, **console.kind_info(KINDS["dpo"]), "trainable_params": 20_000})
    assert "0.02M trained (LoRA)" in lora and "16 pairs per step" in lora and "training pairs kept" in lora


def test_planned_steps_count_like_the_trainer():
    assert console.planned_steps(2000, 8, 1, 1, 1.0) == 250
    assert console.planned_steps(2001, 8, 2, 1, 1.0) == 126  # 251 batches: the partial accumulation is a step
    assert console.planned_steps(100, 8, 1, 2, 3.0) == 21
    assert console.planned_steps(100, 8, 1, 1, 1.0, max_steps=4) == 4


def test_bitsandbytes_kernel_warning_dropped_only_without_4bit(caplog):
    name, start = console.BITSANDBYTES_CPU_KERNEL
    logger = logging.getLogger(name)
    saved = list(logger.filters)
    try:
        logger.filters.clear()
        console.quiet_libraries(four_bit=True)  # a QLoRA run keeps it: the kernel matters there
        with caplog.at_level(logging.WARNING, logger=name):
            logger.warning(start + " from kernels-community: %s", "No module named 'kernels'")
            console.quiet_libraries(four_bit=False)
            console.quiet_libraries(four_bit=False)  # idempotent
            logger.warning(start + " from kernels-community: %s", "No module named 'kernels'")
            logger.warning("another bitsandbytes warning")
        messages = [r.getMessage() for r in caplog.records]
        assert len(logger.filters) == 1
        assert sum(m.startswith(start) for m in messages) == 1 and "another bitsandbytes warning" in messages
    finally:
        logger.filters[:] = saved


def test_counting_collator_counts_loss_carrying_training_tokens_only():
    import torch

    class Model:
        training = True

    class Inner:
        real_tokens = 7

        def __call__(self, examples):
            return {"labels": torch.tensor([[-100, 5, 6], [-100, -100, 9]])}

    model = Model()
    counting = console.CountingCollator(Inner(), lambda: model)
    counting([{}])
    assert counting.trained_tokens == 3 and counting.real_tokens == 7  # other attributes pass through
    model.training = False  # evaluation batches are not training throughput
    counting([{}])
    assert counting.trained_tokens == 3


def test_peft_deprecation_warning_dropped_at_its_source(tiny_model_dir):
    import warnings

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _ = model.is_gradient_checkpointing  # what PEFT reads on every LoRA model
        assert any("is_gradient_checkpointing" in str(w.message) for w in seen)
        seen.clear()
        console.quiet_libraries(four_bit=False)
        _ = model.is_gradient_checkpointing
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another FutureWarning"]
