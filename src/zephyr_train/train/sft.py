"""The SFT stage, top to bottom: check, data, claim the output directory, model, train, summarize.

Everything that can fail on a user's mistake is checked before the model is loaded. Training is
TRL's `SFTTrainer`; what we add is the Zephyr tokenization (one BOS, assistant spans and their EOS
trained), the resume rules of `checkpoints`, the recipe's precision winning over the launcher's,
and a summary a person can read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config.recipe import Recipe
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.train import console, modeling, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.patches import lm_head, packing


def tokenize_dataset(ds: Any, tokenizer: Any, training_template: str, assistant_only: bool,
                     num_proc: int | None = None) -> Any:
    bos = chat_template.adds_bos(tokenizer)

    def tokenize(messages: list[dict]) -> dict:
        out = chat_template.tokenize_messages(tokenizer, messages, training_template, bos)
        if not assistant_only:
            out["assistant_masks"] = [1] * len(out["input_ids"])
        return out

    return ds.map(tokenize, input_columns="messages", remove_columns=ds.column_names, desc="Tokenizing",
                  num_proc=num_proc)


def count_trained_tokens(ds: Any) -> int:
    """Labels that carry loss in TRL's prepared dataset, counted in Arrow (a Python loop over 200k
    rows takes minutes)."""
    import pyarrow.compute as pc

    flat = pc.list_flatten(ds.data.column("labels"))
    return int(pc.sum(pc.not_equal(flat, -100)).as_py() or 0)


def run_sft(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
            callbacks: list[Any] = ()) -> dict[str, Any]:
    """Train the sft stage; `callbacks` are extra trainer callbacks (the Hub's checkpoint pushes).
    Publishing the result is the caller's job (`publish.hub.push_stage`), never the stage's."""
    if recipe.sft is None:
        raise UserError(f"{recipe.source}: no sft section; add one with datasets and trainer settings")
    spec, src = recipe.sft, recipe.source
    trainer_args = {k: v for k, v in spec.trainer.items() if k != "output_dir"}  # recipe.stage_dir reads it
    assistant_only = trainer_args.pop("assistant_only_loss")

    # 1. What can be checked without a model or data: the recipe's rules and data sources ran once, in
    #    `preflight.check.before_stage`, before this was called; here the model's location and the output directory.
    inference_template, training_template = chat_template.resolve(recipe.chat_template, src, recipe.model,
                                                                  download=True)
    location = modeling.model_location(recipe.model, src)
    start = stage.begin(recipe, "sft", overwrite)
    out = start.out

    # 2. Data: the mixture, malformed rows dropped and counted, tokenized with the training template.
    with start.state.main_process_first():
        data = mixture.load_mixture(spec, "sft", src, ["messages"], seed=trainer_args["seed"])
        train, evaluation, dropped = mixture.clean_splits(data, mixture.clean_conversations)
        if len(train) == 0:
            raise UserError(f"{src}: no usable training conversations left after dropping malformed rows "
                            f"({dict(dropped)})")
        tokenizer = modeling.load_tokenizer(location, recipe.model, inference_template)
        procs = trainer_args.get("dataset_num_proc")
        train = tokenize_dataset(train, tokenizer, training_template, assistant_only, procs)
        if evaluation is not None:
            evaluation = tokenize_dataset(evaluation, tokenizer, training_template, assistant_only, procs)
    stage.log_dropped(start, dropped, data["report"]["eval_overlap_removed"])

    # 3. Only now, with recipe and data known good, touch the output directory: nothing is lost to a typo.
    stage.claim(start, recipe, overrides, overwrite)

    # 4. Model, then TRL's trainer (which applies LoRA and, for 4-bit models, prepares them for QLoRA).
    from trl import SFTConfig, SFTTrainer

    callbacks = [*tracking.configure(recipe, "sft", trainer_args, out), *callbacks]
    config = SFTConfig(output_dir=str(out), assistant_only_loss=False, **trainer_args)  # masks are ours
    # after the config: under an accelerate DeepSpeed launch it registers ZeRO-3, so each process loads
    # only its shard instead of the whole model into CPU memory
    model = modeling.load_model(location, recipe.model)
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=modeling.lora_config(spec.lora),
                         callbacks=callbacks)
    if trainer.padding_free and not packing.uses_varlen_kernels(recipe.model.attn_implementation):
        trainer.data_collator = packing.PackedRowsCollator(tokenizer.pad_token_id)
    if lm_head.needs_dense_head(trainer.args.device):
        lm_head.use_dense_lm_head(trainer.model.get_base_model() if spec.lora else trainer.model)

    console.attach(trainer, "sft", train, evaluation, dropped, recipe.model.name_or_path, start.resume)  # banner etc.
    # 5. Train, evaluate, save.
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start.resume) if start.resume else None)
    wall = time.perf_counter() - started
    # read before evaluation adds its own batches
    padding, seen = padding_fraction(trainer.data_collator), getattr(trainer.data_collator, "real_tokens", None)
    eval_metrics = trainer.evaluate() if evaluation is not None else {}
    trainer.save_model(str(out))
    if not start.state.is_main_process:
        return {}
    summary = summarize(trainer, result, eval_metrics, wall, (padding, seen), out, data["report"], dropped, len(train))
    (out / run_files.SUMMARY).write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def summarize(trainer: Any, result: Any, eval_metrics: dict, wall: float, batches: tuple, out: Path,
              report: dict, dropped: dict, n_train: int) -> dict[str, Any]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    per_epoch = count_trained_tokens(trainer.train_dataset)
    epochs = trainer.state.epoch or 0.0
    runtime = result.metrics.get("train_runtime") or wall
    tokens = int(per_epoch * epochs)
    return {
        "stage": "sft",
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss"),
        "global_step": trainer.state.global_step,
        "epochs": epochs,
        "train_examples": n_train,
        "tokens_trained": tokens,
        "tokens_per_second": tokens / runtime if runtime else None,
        "padding_fraction": batches[0],
        "tokens_seen": batches[1],  # tokens through forward and backward, prompts included (this process)
        "train_runtime_s": runtime,
        "wall_time_s": wall,
        "model_dir": str(out),
        "tokenizer_dir": str(out),
        "adapter": hasattr(trainer.model, "peft_config"),
        "data": {"sources": report["sources"], "dropped": dict(dropped),
                 "eval_overlap_removed": report["eval_overlap_removed"]},
    }


def padding_fraction(collator: Any) -> float | None:
    """Share of the positions the model computed that were padding (known for our packed collator)."""
    positions = getattr(collator, "positions", 0)
    return 1 - collator.real_tokens / positions if positions else None


def print_summary(s: dict[str, Any]) -> None:
    def fmt(x: Any) -> str:
        return f"{x:.4f}" if isinstance(x, float) else str(x)

    kind = "adapter" if s["adapter"] else "model"
    print(f"\nSFT done in {s['wall_time_s']:.1f}s: {s['global_step']} steps, {s['epochs']:.2f} epochs, "
          f"{s['train_examples']} conversations")
    print(f"  train loss {fmt(s['train_loss_first'])} -> {fmt(s['train_loss_last'])}, eval loss {fmt(s['eval_loss'])}")
    print(f"  {s['tokens_trained']} trained tokens, {s['tokens_per_second']:.0f} tokens/s")
    print(f"  {kind} and tokenizer saved in {s['model_dir']}; summary in {s['model_dir']}/summary.json")
