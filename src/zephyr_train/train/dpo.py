"""The DPO stage, top to bottom: check, data, claim the output directory, model, train, summarize.

Training is TRL's `DPOTrainer` on `ultrafeedback_binarized`-shaped pairs. The policy starts from the
SFT stage's result when the recipe has an `sft` section (from `model.name_or_path` otherwise). The
reference: with LoRA the same weights with the adapter disabled (no second model); for full
fine-tuning its log-probs computed once before training when the run covers the whole split, else a
frozen copy (`reference_plan`). Log-probs of policy and reference come from packed pairs at completion
positions only (`patches/dpo_log_probs.py`, `dpo.lm_head`): 4.7x plain TRL's trained tokens/s at 0.6x
its peak RSS with a 32000-token vocabulary (docs/dpo-speed.md). Held-out preference accuracy, reward
margin and loss are measured before and after training, in one pass each.
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
from zephyr_train.train import console, merge, modeling, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.patches import dpo_log_probs, prompt_length
from zephyr_train.train.results import headline


def policy_location(recipe: Recipe) -> str:
    """Where the policy starts: the finished SFT stage if the recipe has one, else the recipe's model."""
    if recipe.sft is None:
        return modeling.model_location(recipe.model, recipe.source)
    sft_dir = recipe.stage_dir("sft")
    if not (sft_dir / run_files.SUMMARY).exists():
        raise UserError(f"{recipe.source}: DPO starts from the SFT stage's result, but {sft_dir} holds no finished "
                        f"SFT run; run `zephyr-train sft {recipe.source}` first (or remove the sft section to "
                        "start DPO from model.name_or_path)")
    if (sft_dir / run_files.ADAPTER_CONFIG).exists():
        return str(merge.merged_dir(sft_dir).resolve())  # made by `merge.merge_adapter` before loading
    return str(sft_dir.resolve())


def with_bos(template: str, tokenizer: Any) -> str:
    """TRL tokenizes DPO pairs without special tokens; inference and our SFT start with one BOS (never two:
    templates that write it themselves, as Llama-3's and Gemma's do, are left alone)."""
    writes_bos = "bos_token" in template
    return "{{ bos_token }}" + template if chat_template.adds_bos(tokenizer) and not writes_bos else template


def held_out(trainer: Any) -> dict[str, float]:
    """Preference accuracy (ties count half), mean reward margin and DPO loss on the eval split, in one pass.

    TRL logs only batch means of a strict `chosen > rejected` accuracy, which reads 0.0 before training
    (policy == reference, every pair ties). Per-pair margins β·(log-ratio of chosen − log-ratio of
    rejected) let ties count half, so an untrained policy scores 0.5. Each eval batch runs the policy
    once and the reference once (none when its log-probs were precomputed), both through TRL's own
    `compute_ref_log_probs` (its masking, truncation and `ld_alpha`; for the policy `ref_model` is
    pointed at the policy for the call so a LoRA adapter stays on), and the loss comes from the same
    margins. Before, margins and loss took two passes (margins, then `evaluate()`), each running both
    models: over 4 of the 4.5 minutes of a 12-step DPO stage on 32 held-out pairs with a 32000-token
    vocabulary went there. Loss types other
    than sigmoid and hinge still take their loss from `evaluate()`. The wrapped model (DDP, FSDP,
    DeepSpeed) runs the forwards, since after training a sharded model's parameters live only there.
    """
    import torch

    model, reference, margins = trainer.model_wrapped or trainer.model, trainer.ref_model, []
    model.eval()
    dataloader = trainer.get_eval_dataloader()
    trainer.callback_handler.eval_dataloader = dataloader  # the console's labelled bar, as evaluate() would
    for batch in dataloader:
        trainer.callback_handler.on_prediction_step(trainer.args, trainer.state, trainer.control)
        batch = trainer._prepare_inputs(batch)
        if "ref_chosen_logps" in batch:  # precompute_ref_log_probs
            ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(reference or model, batch)
        trainer.ref_model = model
        try:
            chosen, rejected = trainer.compute_ref_log_probs(model, batch)
        finally:
            trainer.ref_model = reference
        margin = trainer.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        margins.append(trainer.accelerator.gather_for_metrics(margin.float()))
    margins = torch.cat(margins).cpu()
    figures = {"accuracy": ((margins > 0).float().mean() + 0.5 * (margins == 0).float().mean()).item(),
               "margin": margins.mean().item(), "ties": (margins == 0).float().mean().item(),
               "pairs": len(margins), "loss": loss_from_margins(trainer, margins)}
    # reported as evaluate() reports: trackers (W&B eval/*), log_history.json, the console and the report see them
    named = (("eval_loss", figures["loss"]), ("eval_rewards/margins", figures["margin"]),
             ("eval_rewards/accuracies", figures["accuracy"]))
    metrics = {key: value for key, value in named if value is not None}
    trainer.log(metrics)
    trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics=metrics)
    return figures


def loss_from_margins(trainer: Any, margins: Any) -> float | None:
    """TRL's DPO loss, mean over pairs, for the loss types that depend on the margin alone (sigmoid, hinge
    under the standard reverse-KL divergence); any other set-up asks TRL's `evaluate()` (a second pass)."""
    import torch

    plain = (trainer.f_divergence_type == "reverse_kl" and not trainer.use_weighting and not trainer.aux_loss_enabled
             and set(trainer.loss_types) <= {"sigmoid", "hinge"})
    if not plain:
        return trainer.evaluate().get("eval_loss")
    per_type = {"sigmoid": -torch.nn.functional.logsigmoid(margins), "hinge": torch.relu(1 - margins)}
    return float(sum(weight * per_type[kind].mean() for kind, weight in
                     zip(trainer.loss_types, trainer.loss_weights, strict=True)))


def reference_plan(spec: Any, trainer_args: dict[str, Any], n_train: int, world: int) -> str:
    """Full fine-tuning: precompute the reference's log-probs once when the run visits every pair at least once.

    A frozen copy costs one reference forward per pair per epoch and holds a second model; precomputing
    costs one forward per pair, once, before training, and holds nothing. It is dearer only when
    `max_steps` stops the run before it has seen the whole train split. A recipe that sets
    `precompute_ref_log_probs` itself is obeyed. Returns the choice in words, for the log and the summary.
    """
    if spec.lora is not None:
        return "the policy with its adapter disabled (no second model)"
    if "precompute_ref_log_probs" not in trainer_args and not trainer_args.get("sync_ref_model"):
        per_step = spec.setting("per_device_train_batch_size") * world * spec.setting("gradient_accumulation_steps")
        steps = spec.setting("max_steps")
        trainer_args["precompute_ref_log_probs"] = steps <= 0 or steps * per_step >= n_train
    if trainer_args.get("precompute_ref_log_probs"):
        return "log-probs precomputed once before training (no copy held)"
    return "a frozen copy of the starting model"


def release(trainer: Any) -> None:
    """Drop the trainer's hold on the training model, so merging never has two models in memory."""
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.ref_model = trainer.optimizer = trainer.lr_scheduler = None


def merge_once(start: stage.Start, adapter_dir: Path, base: str, recipe: Recipe) -> Path:
    """Merge on the main process only; the others wait for the merged files."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    target = merge.merged_dir(adapter_dir)
    if start.state.is_main_process:
        start.log(f"merging the adapter in {adapter_dir} into {base} (16/32-bit) as {target}")
        merge.merge_adapter(adapter_dir, base, recipe.model)
    start.state.wait_for_everyone()
    return target


def run_dpo(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
            callbacks: list[Any] = ()) -> dict[str, Any]:
    """Train the dpo stage; `callbacks` are extra trainer callbacks (the Hub's checkpoint pushes).
    Publishing the result is the caller's job (`publish.hub.push_stage`), never the stage's."""
    if recipe.dpo is None:
        raise UserError(f"{recipe.source}: no dpo section; add one with datasets and trainer settings")
    spec, src = recipe.dpo, recipe.source
    trainer_args = {k: v for k, v in spec.trainer.items() if k != "output_dir"}  # recipe.stage_dir reads it

    # 1. Checks that need no model or data: the recipe's rules and data sources ran once, in
    #    `preflight.check.before_stage`; here where the policy starts and the output directory.
    inference_template, _ = chat_template.resolve(recipe.chat_template, src, recipe.model, download=True)
    location = policy_location(recipe)
    start = stage.begin(recipe, "dpo", overwrite)

    # 2. Data: pairs checked, bad ones dropped and counted, split into prompt / chosen / rejected.
    with start.state.main_process_first():
        data = mixture.load_mixture(spec, "dpo", src, ["chosen", "rejected"], seed=trainer_args["seed"],
                                    optional=("prompt", "score_chosen", "score_rejected"))
        train, evaluation, dropped = mixture.clean_splits(data, mixture.clean_preferences)
        if len(train) == 0:
            raise UserError(f"{src}: no usable preference pairs left after dropping bad rows ({dict(dropped)})")
    stage.log_dropped(start, dropped, data["report"]["eval_overlap_removed"])

    # 3. The output directory, now that recipe and data are good.
    stage.claim(start, recipe, overrides, overwrite)

    # 4. Model and trainer; TRL tokenizes with the template (one BOS), the saved tokenizer keeps the public one.
    from trl import DPOConfig, DPOTrainer

    if location == str(merge.merged_dir(recipe.stage_dir("sft")).resolve()):
        merge_once(start, recipe.stage_dir("sft"), modeling.model_location(recipe.model, src), recipe)
    elif Path(location).name == run_files.MERGED and (Path(location).parent / run_files.ADAPTER_CONFIG).exists():
        adapter = Path(location).parent  # model.name_or_path is an adapter, e.g. a handbook QLoRA SFT's output_dir
        merge_once(start, adapter, modeling.adapter_base(adapter, src), recipe)

    tokenizer = modeling.load_tokenizer(location, recipe.model, inference_template)
    tokenizer.chat_template = with_bos(inference_template, tokenizer)
    callbacks = [*tracking.configure(recipe, "dpo", trainer_args, start.out), *callbacks]
    reference = reference_plan(spec, trainer_args, len(train), start.state.num_processes)
    config = DPOConfig(output_dir=str(start.out), **trainer_args)
    model = modeling.load_model(location, recipe.model)  # after the config, as in sft.py (ZeRO-3 loading)
    # log-probs of packed pairs at completion positions only, for policy and reference (patches/dpo_log_probs.py)
    with dpo_log_probs.installed(spec.lm_head, config.device) as head, \
            prompt_length.cutting(spec.max_prompt_length, tokenizer.bos_token_id):
        start.log(f"DPO log-probs: packed pairs, completion positions only, {head} LM head; reference: {reference}")
        trainer = DPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                             processing_class=tokenizer, peft_config=modeling.lora_config(spec.lora),
                             callbacks=callbacks)
    tokenizer.chat_template = inference_template
    lengths = mixture.length_counts(trainer.train_dataset, len(train), config.max_length)  # real answers are long
    dropped.update(lengths)
    stage.log_dropped(start, lengths, 0)

    console.attach(trainer, "dpo", train, evaluation, dropped, location, start.resume)  # banner, bars, log lines
    # 5. Held-out figures before, train, after; save.
    before = held_out(trainer) if evaluation is not None and start.resume is None else {}
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start.resume) if start.resume else None)
    wall = time.perf_counter() - started
    after = held_out(trainer) if evaluation is not None else {}
    trainer.save_model(str(start.out))
    summary = summarize(trainer, result, before, after, wall, start.out, data["report"], dropped, len(train))
    summary.update(lm_head=head, reference=reference, padding_fraction=dpo_log_probs.padding_fraction(trainer.model),
                   merged_model_dir=None)
    if spec.lora is not None:  # the final artifact people load: the DPO adapter merged into the SFT model
        release(trainer)
        del trainer, model
        summary["merged_model_dir"] = str(merge_once(start, start.out, location, recipe))
    if not start.state.is_main_process:
        return {}
    (start.out / run_files.SUMMARY).write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def summarize(trainer: Any, result: Any, before: dict, after: dict, wall: float, out: Path, report: dict,
              dropped: dict, n_train: int) -> dict[str, Any]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "stage": "dpo",
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.metrics.get("train_loss"),
        "held_out_before": before,
        "held_out_after": after,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_pairs": n_train,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "wall_time_s": wall,
        "model_dir": str(out),
        "adapter": hasattr(trainer.model, "peft_config"),
        "data": {"sources": report["sources"], "dropped": dict(dropped),
                 "eval_overlap_removed": report["eval_overlap_removed"]},
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"\nDPO done in {s['wall_time_s']:.1f}s: {s['global_step']} steps, {s['train_pairs']} pairs")
    print(f"  {headline(s)}")
    print(f"  {'adapter' if s['adapter'] else 'model'} and tokenizer saved in {s['model_dir']}")
    if s.get("merged_model_dir"):
        print(f"  merged model (loads with transformers alone) in {s['merged_model_dir']}")
