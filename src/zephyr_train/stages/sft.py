"""The SFT stage kind: its declaration (`KIND`), its flow top to bottom, its figures (`SFTResult`).

Flow: check, data, claim the output directory, model, train, summarize. Everything that can fail on a
user's mistake is checked before the model is loaded. Training is TRL's `SFTTrainer`; what we add is the
Zephyr tokenization (one BOS, assistant spans and their EOS trained), the resume rules of `stage_dir`,
the recipe's precision winning over the launcher's, and a summary a person can read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe, Stage
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.inference import modeling
from zephyr_train.preflight.check import render_problem
from zephyr_train.preflight.show import marked
from zephyr_train.train import console, patches, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.patches.contract import Setup
from zephyr_train.train.results import DataReport, StageResult, fmt

TEMPLATE_VARIABLES = "chat_template_kwargs"  # a row's template variables (TRL's column name)


@dataclass(kw_only=True)
class SFTResult(StageResult):
    """SFT's figures (summary.json keys unchanged since the dict they replace)."""

    eval_loss: float | None = None
    train_examples: int = 0  # conversations
    tokens_trained: int = 0  # tokens that carried loss, over the epochs run
    tokens_per_second: float | None = None
    padding_fraction: float | None = None
    tokens_seen: int | None = None  # tokens collated for training, prompts included, all processes (each one's
    # data loader collates one batch ahead of the last step: counted too)
    tokenizer_dir: str = ""

    def headline(self) -> str:
        return f"{super().headline()}, eval loss {fmt(self.eval_loss)}"

    def loss_rows(self) -> list[tuple[str, Any]]:
        return [("eval loss", self.eval_loss)]

    def extra_tiles(self, label: str, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        if self.tokens_per_second is None:
            return []
        return [(f"{label} tokens/s (loss-carrying)", f"{self.tokens_per_second:,.0f}")]


def tokenize_dataset(ds: Any, tokenizer: Any, training_template: str, assistant_only: bool,
                     num_proc: int | None = None) -> Any:
    """Each conversation rendered with the training template (and its row's `chat_template_kwargs`, when the
    data has that column, as TRL does), tokenized with its trained-token mask."""
    bos = chat_template.adds_bos(tokenizer)
    columns = [c for c in ("messages", TEMPLATE_VARIABLES) if c in ds.column_names]

    def tokenize(messages: list[dict], variables: dict | None = None) -> dict:
        out = chat_template.tokenize_messages(tokenizer, messages, training_template, bos, assistant_only,
                                              variables)
        if not assistant_only:
            out["assistant_masks"] = [1] * len(out["input_ids"])
        return out

    return ds.map(tokenize, input_columns=columns, remove_columns=ds.column_names, desc="Tokenizing",
                  num_proc=num_proc)


def count_trained_tokens(ds: Any) -> int:
    """Labels that carry loss in TRL's prepared dataset, counted in Arrow (a Python loop over 200k
    rows takes minutes)."""
    import pyarrow.compute as pc

    flat = pc.list_flatten(ds.data.column("labels"))
    return int(pc.sum(pc.not_equal(flat, -100)).as_py() or 0)


def run_sft(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
            callbacks: list[Any] = ()) -> SFTResult | None:
    """Train the sft stage; `callbacks` are extra trainer callbacks (the Hub's checkpoint pushes).
    Publishing the result is the caller's job (`pipeline.run.run_stage`), never the stage's.
    Returns the figures (None off the main process)."""
    spec, src = recipe.stage("sft"), recipe.source
    if spec is None:
        raise UserError(f"{src}: no sft section; add one with datasets and trainer settings")
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
        data = mixture.load_mixture(spec, "sft", src, list(KIND.columns), seed=trainer_args["seed"],
                                    optional=KIND.optional_columns)
        train, evaluation, dropped = mixture.clean_splits(data, KIND.clean)
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

    # 4. Model, then TRL's trainer (which applies LoRA and, for 4-bit models, prepares them for QLoRA), with
    #    the patches SFT uses (train/patches/: packing, lm_head) unless the recipe says `patches: false`.
    from trl import SFTConfig, SFTTrainer

    callbacks = [*tracking.configure(recipe, "sft", trainer_args, out), *callbacks]
    config = SFTConfig(output_dir=str(out), assistant_only_loss=False, **trainer_args)  # masks are ours
    chosen = patches.plan(KIND.patches, Setup(enabled=recipe.patches, device=config.device.type,
                                              attn_implementation=recipe.model.attn_implementation), start.log)
    # after the config: under an accelerate DeepSpeed launch it registers ZeRO-3, so each process loads
    # only its shard instead of the whole model into CPU memory
    model = modeling.load_model(location, recipe.model)
    trainer = patches.build_trainer(chosen, SFTTrainer, start.log, model=model, args=config, train_dataset=train,
                                    eval_dataset=evaluation, processing_class=tokenizer,
                                    peft_config=modeling.lora_config(spec.lora), callbacks=callbacks)

    console.attach(trainer, KIND, train, evaluation, dropped, recipe.model.name_or_path, start.resume)  # banner etc.
    # 5. Train, evaluate, save.
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start.resume) if start.resume else None)
    wall = time.perf_counter() - started
    # read before evaluation adds its own batches
    padding, seen = padding_fraction(trainer.data_collator), getattr(trainer.data_collator, "real_tokens", None)
    seen = console.over_processes(seen) if seen is not None else None
    eval_metrics = trainer.evaluate() if evaluation is not None else {}
    trainer.save_model(str(out))
    if not start.state.is_main_process:
        return None
    summary = summarize(trainer, result, eval_metrics, wall, (padding, seen), out, data["report"], dropped, len(train))
    summary.patches = chosen.states
    console.launch_figures(trainer, summary)
    summary.write(out)
    print_summary(summary)
    return summary


def summarize(trainer: Any, result: Any, eval_metrics: dict, wall: float, batches: tuple, out: Path,
              report: dict, dropped: dict, n_train: int) -> SFTResult:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    per_epoch = count_trained_tokens(trainer.train_dataset)
    epochs = trainer.state.epoch or 0.0
    runtime = result.metrics.get("train_runtime") or wall
    tokens = int(per_epoch * epochs)
    return SFTResult(
        stage="sft", train_loss_first=losses[0] if losses else None, train_loss_last=losses[-1] if losses else None,
        train_loss_mean=result.metrics.get("train_loss"), eval_loss=eval_metrics.get("eval_loss"),
        global_step=trainer.state.global_step, epochs=epochs, train_examples=n_train, tokens_trained=tokens,
        tokens_per_second=tokens / runtime if runtime else None, padding_fraction=batches[0], tokens_seen=batches[1],
        train_runtime_s=runtime, wall_time_s=wall, model_dir=str(out), tokenizer_dir=str(out),
        adapter=hasattr(trainer.model, "peft_config"),
        data=DataReport(sources=report["sources"], dropped=dict(dropped),
                        eval_overlap_removed=report["eval_overlap_removed"]))


def padding_fraction(collator: Any) -> float | None:
    """Share of the positions the model computed that were padding (known for our packed collator)."""
    positions = getattr(collator, "positions", 0)
    return 1 - collator.real_tokens / positions if positions else None


def print_summary(s: SFTResult) -> None:
    def fmt4(x: Any) -> str:
        return f"{x:.4f}" if isinstance(x, float) else str(x)

    kind = "adapter" if s.adapter else "model"
    print(f"\nSFT done in {s.wall_time_s:.1f}s: {s.global_step} steps, {s.epochs:.2f} epochs, "
          f"{s.train_examples} conversations")
    print(f"  train loss {fmt4(s.train_loss_first)} -> {fmt4(s.train_loss_last)}, eval loss {fmt4(s.eval_loss)}")
    print(f"  {s.tokens_trained} trained tokens, {s.tokens_per_second:.0f} tokens/s")
    print(f"  {kind} and tokenizer saved in {s.model_dir}; summary in {s.model_dir}/summary.json")


# --- what `check` and `check --show` do with SFT rows ----------------------------------------------------


def row_problem(row: dict, templates: tuple[str, str], stage: Stage) -> str | None:
    """Why a conversation would be dropped, or does not render with the training template's spans."""
    problem = mixture.conversation_problem(row["messages"])
    return problem or render_problem(row["messages"], templates[1], stage.trainer.get("assistant_only_loss", False))


def example(row: dict, templates: tuple[str, str], stage: Stage) -> str:
    """The conversation rendered for training, the `{% generation %}` spans (or all of it) marked."""
    text, spans = chat_template.render(templates[1], row["messages"])
    return marked(text, spans if stage.trainer.get("assistant_only_loss", False) else [(0, len(text))])


def rules(recipe: Recipe, stage: Stage) -> list[str]:
    """The training template must mark assistant spans when assistant_only_loss is on."""
    templates = chat_template.resolve(recipe.chat_template, recipe.source, recipe.model)  # None: not on disk yet
    if templates is None:
        return []
    try:
        chat_template.check_trainable(templates[1], stage.trainer.get("assistant_only_loss", False), recipe.source)
    except UserError as err:
        return [str(err)]
    return []


KIND = StageKind(
    name="sft", label="SFT", title="supervised fine-tuning (Zephyr stage 1)", unit="conversations",
    token_throughput=True, card_title="distilled supervised fine-tuning (dSFT, Zephyr stage 1)",
    card_limits="This is the SFT stage alone: it imitates the\nassistant answers in its data and has had no "
                "preference tuning at all.",
    trainer_config="trl.trainer.sft_config.SFTConfig", trainer_class="trl.SFTTrainer",
    trainer_module="trl.trainer.sft_trainer",
    defaults={
        "packing": True,  # padding-free best-fit packing; block-diagonal attention keeps examples apart
        "max_length": 2048,  # the paper's sequence length
        "assistant_only_loss": True,  # train on assistant turns and their EOS only
        "save_strategy": "steps",
        "save_steps": 500,
    },
    columns=("messages",), optional_columns=(TEMPLATE_VARIABLES,), train_split="train_sft", eval_split="test_sft",
    packs_rows=True,
    lr_range=(1e-6, 1e-4), lr_range_lora=(1e-5, 1e-3),
    plots=(
        ("sft_loss.png", "SFT loss", "loss", [
            ("log:loss", "train"), ("log:eval_loss", "eval (during training)"),
            ("summary:eval_loss", "eval (end, summary.json)")]),
        ("entropy.png", "Mean token entropy (SFT)", "nats", [("log:entropy", "train")]),
        ("throughput.png", "SFT throughput (loss-carrying tokens)", "tokens / s", [
            ("log:tokens_per_second", "per logging interval (console)"),
            ("summary:tokens_per_second", "mean over training (summary.json)")]),
    ),
    rules=rules, clean=mixture.clean_conversations, row_problem=row_problem, example=example,
    patches=("packing", "lm_head", "lean_layers"), run=run_sft, result=SFTResult,
)
