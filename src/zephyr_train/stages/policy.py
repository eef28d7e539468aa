"""The policy of a preference stage (DPO, KTO, ORPO): where it starts, how TRL tokenizes its prompts, and
its LoRA result merged once. Shared by every kind that trains on a model an earlier stage (or the recipe)
hands it, so a new kind is its own module and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config.recipe import Recipe
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.inference import merge, modeling
from zephyr_train.train import console
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.results import StageResult


def location(recipe: Recipe, kind: str) -> str:
    """Where the policy of stage `kind` starts: the finished upstream stage (SFT) if the recipe has one, else
    the recipe's model."""
    upstream = recipe.upstream(kind)
    if upstream is None:
        return modeling.model_location(recipe.model, recipe.source)
    up_dir, label, up_label = recipe.stage_dir(upstream.kind), recipe.kinds[kind].label, upstream.spec.label
    if not (up_dir / run_files.SUMMARY).exists():
        raise UserError(f"{recipe.source}: {label} starts from the {up_label} stage's result, but {up_dir} holds no "
                        f"finished {up_label} run; run `zephyr-train {upstream.kind} {recipe.source}` first (or remove "
                        f"the {upstream.kind} section to start {label} from model.name_or_path)")
    if (up_dir / run_files.ADAPTER_CONFIG).exists():
        return str(merge.merged_dir(up_dir).resolve())  # made by `merge_upstream` before loading
    return str(up_dir.resolve())


def merge_upstream(start: stage.Start, recipe: Recipe, policy: str) -> None:
    """A policy that is a LoRA adapter (the upstream stage's, or a handbook QLoRA SFT's output_dir given as
    model.name_or_path) is merged into its base once, before the policy loads."""
    upstream = recipe.upstream(start.name)
    if upstream is not None and policy == str(merge.merged_dir(recipe.stage_dir(upstream.kind)).resolve()):
        merge_once(start, recipe.stage_dir(upstream.kind), modeling.model_location(recipe.model, recipe.source),
                   recipe)
    elif Path(policy).name == run_files.MERGED and (Path(policy).parent / run_files.ADAPTER_CONFIG).exists():
        adapter = Path(policy).parent
        merge_once(start, adapter, modeling.adapter_base(adapter, recipe.source), recipe)


def with_bos(template: str, tokenizer: Any) -> str:
    """TRL tokenizes preference rows without special tokens; inference and our SFT start with one BOS (never
    two: templates that write it themselves, as Llama-3's and Gemma's do, are left alone)."""
    writes_bos = "bos_token" in template
    return "{{ bos_token }}" + template if chat_template.adds_bos(tokenizer) and not writes_bos else template


def load_rows(start: stage.Start, spec: Any, kind: str, source: str, columns: tuple[str, ...],
              optional: tuple[str, ...], clean: Callable[[Any], Any], seed: int,
              rows: str) -> tuple[dict, Any, Any, Any]:
    """A preference stage's data: its mixture loaded and cleaned on the main process first (the others read
    its cache), bad rows dropped, counted and logged; (mixture, train, eval, dropped). UserError naming ROWS
    when no training row is left."""
    with start.state.main_process_first():
        data = mixture.load_mixture(spec, kind, source, list(columns), seed=seed, optional=optional)
        train, evaluation, dropped = mixture.clean_splits(data, clean)
        if len(train) == 0:
            raise UserError(f"{source}: no usable {rows} left after dropping bad rows ({dict(dropped)})")
    stage.log_dropped(start, dropped, data["report"]["eval_overlap_removed"])
    return data, train, evaluation, dropped


def release(trainer: Any) -> None:
    """Drop the trainer's hold on the training model, so merging never has two models in memory."""
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    if hasattr(trainer, "ref_model"):
        trainer.ref_model = None


def whole_before_training(trainer: Any) -> Any:
    """A context in which the policy can run before `train()`. ZeRO-3 loads each rank's shard of the weights
    (`zero3_init_flag`), and only the DeepSpeed engine that `train()` builds gathers them for a forward; until
    then every rank gathers the whole policy for the held-out pass (a 7B model's 14 GB in bf16 per GPU, before
    any optimizer state exists). TRL has already wrapped the reference model in its own engine."""
    from contextlib import nullcontext

    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3 or trainer.model_wrapped is not trainer.model:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None)


def train_between_held_out(trainer: Any, start: stage.Start, evaluation: Any,
                           measure: Callable[[], Any]) -> tuple[Any, Any, Any, float]:
    """Held-out figures (`measure()`, when there is an eval set) before training, except on a resume (the
    model is no longer the starting one), then training (from the checkpoint a resume names), the figures
    after, and the model saved: (before, after, `trainer.train()`'s output, wall seconds of training)."""
    if evaluation is not None and start.resume is None:
        with whole_before_training(trainer):
            before = measure()
    else:
        before = None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start.resume) if start.resume else None)
    wall = time.perf_counter() - started
    after = measure() if evaluation is not None else None
    trainer.save_model(str(start.out))
    return before, after, result, wall


def finish(start: stage.Start, summary: StageResult, trainer: Any, lora: bool, policy: str,
           recipe: Recipe) -> StageResult | None:
    """A preference stage's end: a LoRA adapter merged into the policy it started from (the artifact people
    load; the trainer lets go of its model first, and the caller of its own), then summary.json on the main
    process. None off the main process."""
    console.launch_figures(trainer, summary)
    if lora:
        release(trainer)
        summary.merged_model_dir = str(merge_once(start, start.out, policy, recipe))
    if not start.state.is_main_process:
        return None
    summary.write(start.out)
    return summary


def merge_once(start: stage.Start, adapter_dir: Path, base: str, recipe: Recipe) -> Path:
    """Merge on the main process only; the others wait for the merged files."""
    import gc

    import torch

    modeling.whole_models_from_now()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    target = merge.merged_dir(adapter_dir)
    if start.state.is_main_process:
        start.log(f"merging the adapter in {adapter_dir} into {base} (16/32-bit) as {target}")
        merge.merge_adapter(adapter_dir, base, recipe.model)
    start.state.wait_for_everyone()
    return target
