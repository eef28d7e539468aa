"""The DPO stage kind: its declaration (`KIND`), its flow top to bottom, its figures (`DPOResult`).

Flow: check, data, claim the output directory, model, train, summarize.

Training is TRL's `DPOTrainer` on `ultrafeedback_binarized`-shaped pairs. The policy starts from the
SFT stage's result when the recipe has an `sft` section (from `model.name_or_path` otherwise). The
reference: with LoRA the same weights with the adapter disabled (no second model); for full
fine-tuning its log-probs computed once before training when the run covers the whole split, else a
frozen copy (`reference_plan`). Log-probs of policy and reference come from packed pairs at completion
positions only, each pair's prompt computed once (`patches/dpo_log_probs.py`, `dpo.lm_head`): 4.3x plain
TRL's trained tokens/s at 0.42x its peak RSS with a 32000-token vocabulary, 3.0x at 0.93x on the real
SmolLM2-135M (README: Benchmark). Held-out preference accuracy, reward
margin and loss are measured before and after training, in one pass each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zephyr_train.config.dpo_rules import check_losses
from zephyr_train.config.recipe import Recipe, Stage
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.inference import modeling
from zephyr_train.preflight.check import render_problem
from zephyr_train.preflight.show import marked
from zephyr_train.stages import policy
from zephyr_train.train import console, patches, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.patches import dpo_log_probs
from zephyr_train.train.patches.contract import Setup
from zephyr_train.train.results import Figures, StageResult, common_figures, fmt

PLAIN_HEAD = "TRL's fused"  # `lm_head` when the dpo_log_probs patch is off: every position through TRL's head


@dataclass
class Options:
    """DPO's own recipe keys beside DPOConfig's fields."""

    max_prompt_length: int | None = None  # prompts cut to their last N tokens (TRL 1.16 has no such field)
    lm_head: str = "auto"  # auto | dense | trl: the log-prob head (train/patches/dpo_log_probs.py)


@dataclass
class HeldOut(Figures):
    """Preference figures on the held-out pairs (`held_out`)."""

    accuracy: float | None = None  # ties count half, so an untrained policy scores 0.5
    margin: float | None = None  # mean beta-scaled reward margin
    ties: float | None = None
    pairs: int = 0
    loss: float | None = None


@dataclass(kw_only=True)
class DPOResult(StageResult):
    """DPO's figures (summary.json keys unchanged since the dict they replace; no held-out set: `{}`)."""

    held_out_before: HeldOut | None = None
    held_out_after: HeldOut | None = None
    train_pairs: int = 0
    lm_head: str | None = None  # the head log-probs went through: dense, trl, or TRL's own (PLAIN_HEAD)
    reference: str | None = None  # the reference plan in words
    padding_fraction: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        for key in ("held_out_before", "held_out_after"):
            out[key] = out[key] or {}
        return out

    def extra_rows(self, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        rows = []
        before, after = self.held_out_before or HeldOut(), self.held_out_after or HeldOut()
        for key, label in (("accuracy", "held-out preference accuracy"), ("margin", "held-out reward margin"),
                           ("loss", "held-out DPO loss")):
            if getattr(after, key) is not None:
                start = f"{cell(getattr(before, key))} -> " if getattr(before, key) is not None else ""
                rows.append((f"{label} (before -> after)" if start else label, start + cell(getattr(after, key))))
        return rows

    def extra_tiles(self, label: str, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        before, after = self.held_out_before or HeldOut(), self.held_out_after
        if after is None or after.accuracy is None:
            return []
        return [("held-out preference accuracy", f"{cell(before.accuracy)} → {cell(after.accuracy)}"),
                ("held-out reward margin", f"{cell(before.margin)} → {cell(after.margin)}")]

    def headline(self) -> str:
        line = super().headline()
        before, after = self.held_out_before or HeldOut(), self.held_out_after
        if after:
            line += (f", held-out preference accuracy {fmt(before.accuracy)} -> {fmt(after.accuracy)}, "
                     f"reward margin {fmt(before.margin)} -> {fmt(after.margin)}")
        return line


def held_out(trainer: Any) -> HeldOut:
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
    figures = HeldOut(accuracy=((margins > 0).float().mean() + 0.5 * (margins == 0).float().mean()).item(),
                      margin=margins.mean().item(), ties=(margins == 0).float().mean().item(),
                      pairs=len(margins), loss=loss_from_margins(trainer, margins))
    # reported as evaluate() reports: trackers (W&B eval/*), log_history.json, the console and the report see them
    named = (("eval_loss", figures.loss), ("eval_rewards/margins", figures.margin),
             ("eval_rewards/accuracies", figures.accuracy))
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


def run_dpo(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
            callbacks: list[Any] = ()) -> DPOResult | None:
    """Train the dpo stage; `callbacks` are extra trainer callbacks (the Hub's checkpoint pushes).
    Publishing the result is the caller's job (`pipeline.run.run_stage`), never the stage's.
    Returns the figures (None off the main process)."""
    spec, src = recipe.stage("dpo"), recipe.source
    if spec is None:
        raise UserError(f"{src}: no dpo section; add one with datasets and trainer settings")
    trainer_args = {k: v for k, v in spec.trainer.items() if k != "output_dir"}  # recipe.stage_dir reads it

    # 1. Checks that need no model or data: the recipe's rules and data sources ran once, in
    #    `preflight.check.before_stage`; here where the policy starts and the output directory.
    inference_template, _ = chat_template.resolve(recipe.chat_template, src, recipe.model, download=True)
    location = policy.location(recipe, "dpo")
    start = stage.begin(recipe, "dpo", overwrite)

    # 2. Data: pairs checked, bad ones dropped and counted, split into prompt / chosen / rejected.
    data, train, evaluation, dropped = policy.load_rows(start, spec, "dpo", src, KIND.columns, KIND.optional_columns,
                                                        KIND.clean, trainer_args["seed"], "preference pairs")

    # 3. The output directory, now that recipe and data are good.
    stage.claim(start, recipe, overrides, overwrite)

    # 4. Model and trainer; TRL tokenizes with the template (one BOS), the saved tokenizer keeps the public one.
    from trl import DPOConfig, DPOTrainer

    policy.merge_upstream(start, recipe, location)
    tokenizer = modeling.load_tokenizer(location, recipe.model, inference_template)
    tokenizer.chat_template = policy.with_bos(inference_template, tokenizer)
    callbacks = [*tracking.configure(recipe, "dpo", trainer_args, start.out), *callbacks]
    reference = reference_plan(spec, trainer_args, len(train), start.state.num_processes)
    config = DPOConfig(output_dir=str(start.out), **trainer_args)
    # the patches DPO uses (train/patches/): log-probs of packed pairs at completion positions only, for policy
    # and reference, and prompts cut to max_prompt_length, both while TRL builds the trainer
    setup = Setup(enabled=recipe.patches, device=config.device.type, lm_head=spec.options.lm_head,
                  max_prompt_length=spec.options.max_prompt_length, bos_token_id=tokenizer.bos_token_id)
    chosen = patches.plan(KIND.patches, setup, start.log)
    model = modeling.load_model(location, recipe.model)  # after the config, as in sft.py (ZeRO-3 loading)
    start.log(f"DPO reference: {reference}")
    trainer = patches.build_trainer(chosen, DPOTrainer, start.log, model=model, args=config, train_dataset=train,
                                    eval_dataset=evaluation, processing_class=tokenizer,
                                    peft_config=modeling.lora_config(spec.lora), callbacks=callbacks)
    head = dpo_log_probs.head_of(trainer.model) or PLAIN_HEAD
    layout = dpo_log_probs.layout_of(trainer.model) + ", " if chosen.applied("dpo_log_probs") else ""
    start.log(f"DPO log-probs: {layout}{head} LM head")
    tokenizer.chat_template = inference_template
    lengths = mixture.length_counts(trainer.train_dataset, len(train), config.max_length)  # real answers are long
    dropped.update(lengths)
    stage.log_dropped(start, lengths, 0)

    console.attach(trainer, KIND, train, evaluation, dropped, location, start.resume)  # banner, bars, log lines
    # 5. Held-out figures before, train, after; save.
    before, after, result, wall = policy.train_between_held_out(trainer, start, evaluation, lambda: held_out(trainer))
    summary = DPOResult(
        stage="dpo", **common_figures(trainer, result, wall, start.out, data["report"], dropped),
        held_out_before=before, held_out_after=after, train_pairs=len(train), lm_head=head, reference=reference,
        patches=chosen.states, padding_fraction=dpo_log_probs.padding_fraction(trainer.model))
    del model  # merging (LoRA) never holds two models
    if policy.finish(start, summary, trainer, spec.lora is not None, location, recipe) is None:
        return None
    print_summary(summary)
    return summary


def print_summary(s: DPOResult) -> None:
    print(f"\nDPO done in {s.wall_time_s:.1f}s: {s.global_step} steps, {s.train_pairs} pairs")
    print(f"  {s.headline()}")
    print(f"  {'adapter' if s.adapter else 'model'} and tokenizer saved in {s.model_dir}")
    if s.merged_model_dir:
        print(f"  merged model (loads with transformers alone) in {s.merged_model_dir}")


# --- what `check`, `check --show` and the memory estimate know of DPO -------------------------------------


def _context(row: dict) -> list[dict]:
    """The shared prompt of a pair: the chosen conversation without its answer, or the `prompt` column."""
    return row["chosen"][:-1] or [{"role": "user", "content": row["prompt"]}]


def row_problem(row: dict, templates: tuple[str, str], stage: Stage) -> str | None:
    """Why a pair would be dropped, or does not render with the inference template (TRL tokenizes with it)."""
    problem = mixture.preference_problem(row)
    if problem:
        return problem
    conversation = _context(row) + row["chosen"][-1:]
    return mixture.conversation_problem(conversation) or render_problem(conversation, templates[0], False)


def example(row: dict, templates: tuple[str, str], stage: Stage) -> str:
    """The chosen and the rejected answer after the shared prompt, each answer marked."""
    parts = []
    for side in ("chosen", "rejected"):
        answer = row[side][-1]
        text, _ = chat_template.render(templates[0], _context(row) + [answer])
        start = text.rfind(answer["content"])
        parts.append(f"--- {side}:\n{marked(text, [(start, len(text))])}")
    return "\n".join(parts)


def rules(recipe: Recipe, stage: Stage) -> list[str]:
    """beta must be positive; a prompt cap must leave room for the answers."""
    src, errors = recipe.source, []
    if stage.setting("beta") <= 0:
        errors.append(f"{src}: dpo.beta must be > 0 (Zephyr used 0.1; the current public recipe 0.01)")
    max_length, prompt = stage.trainer.get("max_length"), stage.options.max_prompt_length
    if prompt is not None and (max_length is None or prompt >= max_length):
        errors.append(f"{src}: dpo.max_prompt_length {prompt} must be below dpo.max_length "
                      f"{max_length}, or no answer token is left to compare (public recipe: 512 of 1024)")
    setup = Setup(enabled=recipe.patches, max_prompt_length=prompt)
    return errors + [f"{src}: {error}" for error in patches.errors(KIND.patches, setup)]


def validate(stage: Stage, source: str) -> None:
    """DPOTrainer's own loss rules and our option values, when the recipe is read."""
    if stage.options.lm_head not in dpo_log_probs.HEADS:
        raise UserError(f"{source}: dpo.lm_head must be auto, dense or trl, got {stage.options.lm_head!r}")
    check_losses(stage.trainer, source, stage.kind, stage.spec.fields())


def holds_reference(stage: Stage) -> bool:
    """Full fine-tuning keeps a frozen reference copy unless its log-probs are precomputed: the recipe says so,
    or (unset) the run visits the whole split, when `reference_plan` precomputes them once (a max_steps run may
    stop earlier and keeps a frozen copy: counted, to be safe)."""
    if stage.lora is not None:
        return False
    asked = stage.trainer.get("precompute_ref_log_probs")
    if asked is not None or stage.trainer.get("sync_ref_model"):
        return not asked
    return stage.setting("max_steps") > 0


KIND = StageKind(
    name="dpo", label="DPO", title="direct preference optimization (Zephyr stage 2)", unit="pairs",
    eval_name="held-out pairs", card_title="distilled direct preference optimization (dDPO, Zephyr stage 2)",
    card_training="Preference pairs are ranked by AI feedback (UltraFeedback-style); no\nhuman labels and no RL "
                  "sampling.",
    trainer_config="trl.trainer.dpo_config.DPOConfig", trainer_class="trl.DPOTrainer",
    trainer_module="trl.trainer.dpo_trainer", options=Options,
    columns=("chosen", "rejected"), optional_columns=("prompt", "score_chosen", "score_rejected",
                                                      "chat_template_kwargs"),  # TRL renders each row with it
    train_split="train_prefs", eval_split="test_prefs", starts_from="sft",
    lr_range=(1e-8, 1e-5), lr_range_lora=(1e-7, 1e-4), sequences_per_row=2, holds_reference=holds_reference,
    plots=(
        ("dpo_loss.png", "DPO loss", "loss", [("log:loss", "train"), ("held:loss", "held-out (summary.json)")]),
        ("dpo_rewards.png", "DPO rewards (train batches)", "reward", [
            ("log:rewards/chosen", "chosen"), ("log:rewards/rejected", "rejected"),
            ("log:rewards/margins", "margin"), ("held:margin", "held-out margin (summary.json)")]),
        ("dpo_accuracy.png", "DPO preference accuracy", "accuracy", [
            ("held:accuracy", "held-out, ties count half (summary.json)"),
            ("log:rewards/accuracies", "train batches, ties count as wrong (TRL)")]),
    ),
    validate=validate, rules=rules, clean=mixture.clean_preferences, row_problem=row_problem, example=example,
    patches=("dpo_log_probs", "prompt_length", "lean_layers"), run=run_dpo, result=DPOResult,
)
