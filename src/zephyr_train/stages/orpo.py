"""The ORPO stage kind: its declaration (`KIND`), its flow top to bottom, its figures (`ORPOResult`).

ORPO (Hong et al., 2024) trains a base model on preference pairs in one stage, no SFT first and no
reference model: the loss is the chosen answer's NLL plus beta times the log-odds ratio of chosen over
rejected. The alignment-handbook's zephyr-141b-A35b (Mixtral-8x22B on distilabel-capybara-dpo-7k) is
trained this way. TRL 1.16 ships `ORPOTrainer` in `trl.experimental.orpo`, outside its stability
promise, so the recipe is checked against the installed TRL before anything loads.

Flow: check, data, claim the output directory, model, held-out figures, train, held-out figures, save.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zephyr_train.config.recipe import Recipe, Stage
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.config.trainer_fields import module_file
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.inference import modeling
from zephyr_train.preflight.environment import versions
from zephyr_train.stages import dpo, policy
from zephyr_train.train import console, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.results import Figures, StageResult, common_figures, fmt

EXPERIMENTAL = "trl.experimental.orpo"  # where TRL 1.16 keeps ORPOTrainer and ORPOConfig


@dataclass
class HeldOut(Figures):
    """ORPO's figures on the held-out pairs, from TRL's own evaluation."""

    accuracy: float | None = None  # share of pairs whose chosen answer is likelier (TRL: ties count as wrong)
    log_odds_ratio: float | None = None  # mean log sigmoid of the chosen-over-rejected log-odds
    nll_loss: float | None = None  # the chosen answers' NLL, the SFT half of the loss
    loss: float | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> HeldOut:
        return cls(accuracy=metrics.get("eval_rewards/accuracies"), log_odds_ratio=metrics.get("eval_log_odds_ratio"),
                   nll_loss=metrics.get("eval_nll_loss"), loss=metrics.get("eval_loss"))


@dataclass(kw_only=True)
class ORPOResult(StageResult):
    held_out_before: HeldOut | None = None
    held_out_after: HeldOut | None = None
    train_pairs: int = 0

    def headline(self) -> str:
        before, after = self.held_out_before or HeldOut(), self.held_out_after
        line = super().headline()
        if after:
            line += (f", held-out preference accuracy {fmt(before.accuracy)} -> {fmt(after.accuracy)}, "
                     f"log-odds ratio {fmt(before.log_odds_ratio)} -> {fmt(after.log_odds_ratio)}")
        return line

    def extra_rows(self, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        before, after = self.held_out_before or HeldOut(), self.held_out_after or HeldOut()
        return [(f"held-out {label} (before -> after)", f"{cell(getattr(before, key))} -> {cell(getattr(after, key))}")
                for key, label in (("accuracy", "preference accuracy"), ("log_odds_ratio", "log-odds ratio"),
                                   ("nll_loss", "chosen NLL")) if getattr(after, key) is not None]


def run_orpo(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
             callbacks: list[Any] = ()) -> ORPOResult | None:
    """Train the orpo stage (publishing is `pipeline.run.run_stage`'s job). None off the main process."""
    spec, src = recipe.stage("orpo"), recipe.source
    if spec is None:
        raise UserError(f"{src}: no orpo section; add one with datasets and trainer settings")
    trainer_args = {k: v for k, v in spec.trainer.items() if k != "output_dir"}

    # 1. The recipe's rules ran in `preflight.check.before_stage`; here where the policy starts and the output.
    inference_template, _ = chat_template.resolve(recipe.chat_template, src, recipe.model, download=True)
    location = policy.location(recipe, "orpo")
    start = stage.begin(recipe, "orpo", overwrite)

    # 2. Data: pairs checked, bad ones dropped and counted, split into prompt / chosen / rejected (as DPO's).
    data, train, evaluation, dropped = policy.load_rows(start, spec, "orpo", src, KIND.columns,
                                                        KIND.optional_columns, KIND.clean, trainer_args["seed"],
                                                        "preference pairs")

    # 3. The output directory, now that recipe and data are good.
    stage.claim(start, recipe, overrides, overwrite)

    # 4. Model and TRL's trainer (which applies LoRA, and prepares 4-bit models for QLoRA).
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    policy.merge_upstream(start, recipe, location)
    tokenizer = modeling.load_tokenizer(location, recipe.model, inference_template)
    tokenizer.chat_template = policy.with_bos(inference_template, tokenizer)
    callbacks = [*tracking.configure(recipe, "orpo", trainer_args, start.out), *callbacks]
    config = ORPOConfig(output_dir=str(start.out), **trainer_args)
    model = modeling.load_model(location, recipe.model)  # after the config (ZeRO-3 loading, as in sft.py)
    trainer = ORPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                          processing_class=tokenizer, peft_config=modeling.lora_config(spec.lora), callbacks=callbacks)
    tokenizer.chat_template = inference_template
    console.attach(trainer, KIND, train, evaluation, dropped, location, start.resume)

    # 5. Held-out figures (from TRL's own evaluation) before, train, after; save.
    before, after, result, wall = policy.train_between_held_out(
        trainer, start, evaluation, lambda: HeldOut.from_metrics(trainer.evaluate()))
    summary = ORPOResult(
        stage="orpo", **common_figures(trainer, result, wall, start.out, data["report"], dropped),
        held_out_before=before, held_out_after=after, train_pairs=len(train))
    del model  # merging (LoRA) never holds two models
    if policy.finish(start, summary, trainer, spec.lora is not None, location, recipe) is None:
        return None
    print(f"\nORPO done in {wall:.1f}s: {summary.global_step} steps, {summary.train_pairs} pairs\n  "
          f"{summary.headline()}\n  {'adapter' if summary.adapter else 'model'} saved in {summary.model_dir}")
    return summary


def validate(stage: Stage, source: str) -> None:
    """ORPOTrainer is experimental in TRL 1.16: a TRL without it is one line, before anything loads."""
    try:
        present = module_file(EXPERIMENTAL).exists()
    except ModuleNotFoundError:
        present = False
    if not present:
        raise UserError(f"{source}: the orpo stage needs TRL's {EXPERIMENTAL} (TRL 1.16); the installed TRL "
                        f"{versions(('trl',))['trl']} has none: pip install 'trl==1.16.*'")


def rules(recipe: Recipe, stage: Stage) -> list[str]:
    if stage.setting("beta") <= 0:
        return [f"{recipe.source}: orpo.beta must be > 0 (the handbook's zephyr-141b ORPO used 0.05)"]
    return []


KIND = StageKind(
    name="orpo", label="ORPO", title="odds-ratio preference optimization (one stage, no reference model)",
    unit="pairs", eval_name="held-out pairs",
    card_title="odds ratio preference optimization (ORPO: SFT and preference tuning in one stage)",
    card_training="Preference pairs ranked by AI feedback; the chosen answers are imitated and preferred over\nthe "
                  "rejected ones in one loss, with no reference model.",
    trainer_config=f"{EXPERIMENTAL}.orpo_config.ORPOConfig", trainer_class=f"{EXPERIMENTAL}.ORPOTrainer",
    trainer_module=f"{EXPERIMENTAL}.orpo_trainer",
    columns=("chosen", "rejected"), optional_columns=("prompt",), train_split="train", eval_split="test",
    lr_range=(1e-7, 1e-4), lr_range_lora=(1e-6, 1e-3), sequences_per_row=2,
    plots=(
        ("orpo_loss.png", "ORPO loss", "loss", [("log:loss", "train"), ("log:nll_loss", "chosen NLL (train)"),
                                                ("held:loss", "held-out (summary.json)")]),
        ("orpo_log_odds.png", "ORPO log-odds ratio", "log sigmoid(log-odds)", [
            ("log:log_odds_ratio", "train"), ("held:log_odds_ratio", "held-out (summary.json)")]),
        ("orpo_accuracy.png", "ORPO preference accuracy", "accuracy", [
            ("log:rewards/accuracies", "train batches"), ("held:accuracy", "held-out (summary.json)")]),
    ),
    shown=(("log_odds_ratio", "log_odds", ".3f"), ("eval_log_odds_ratio", "eval_log_odds", ".3f")),
    validate=validate, rules=rules, clean=mixture.clean_preferences, row_problem=dpo.row_problem,
    example=dpo.example, run=run_orpo, result=ORPOResult,
)
