"""The KTO stage kind: its declaration (`KIND`), its flow top to bottom, its figures (`KTOResult`).

KTO (Ethayarajh et al., 2024) learns from unpaired feedback: a prompt, a completion and whether it was
desirable. Like DPO it starts from the SFT stage's result and keeps a reference (the adapter disabled
with LoRA, else a copy or precomputed log-probs, as TRL's `KTOTrainer` decides). It reads unpaired
`prompt`/`completion`/`label` rows (trl-lib/kto-mix-14k), or `ultrafeedback_binarized` pairs, which TRL
unpairs itself (each chosen answer desirable, each rejected one not).

Flow: check, data, claim the output directory, model, held-out figures, train, held-out figures, save.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zephyr_train.config.recipe import Recipe, Stage
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.inference import modeling
from zephyr_train.preflight.check import render_problem
from zephyr_train.preflight.show import marked
from zephyr_train.stages import dpo, policy
from zephyr_train.train import console, tracking
from zephyr_train.train import stage_dir as stage
from zephyr_train.train.results import Figures, StageResult, common_figures, fmt

PAIRS = ("chosen", "rejected")  # ultrafeedback_binarized: TRL unpairs them
UNPAIRED = ("prompt", "completion", "label")  # KTO's own rows: label true = desirable


@dataclass
class HeldOut(Figures):
    """KTO's figures on the held-out rows, from TRL's own evaluation."""

    kl: float | None = None  # the batch KL estimate between policy and reference (KTO's reference point)
    rewards_desirable: float | None = None  # mean beta-scaled log-ratio of the desirable completions
    rewards_undesirable: float | None = None
    margin: float | None = None  # desirable minus undesirable
    loss: float | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> HeldOut:
        """TRL logs a margin only for batches holding both kinds; unpaired pairs come in runs of one kind (all
        chosen, then all rejected), so the margin is the difference of the two means over the whole set."""
        good, bad = metrics.get("eval_rewards/chosen"), metrics.get("eval_rewards/rejected")
        return cls(kl=metrics.get("eval_kl"), rewards_desirable=good, rewards_undesirable=bad,
                   margin=None if good is None or bad is None else good - bad, loss=metrics.get("eval_loss"))


@dataclass(kw_only=True)
class KTOResult(StageResult):
    held_out_before: HeldOut | None = None
    held_out_after: HeldOut | None = None
    train_rows: int = 0  # before TRL unpairs pairs (a pair is two rows for KTO)
    desirable: int = 0
    undesirable: int = 0

    def headline(self) -> str:
        before, after = self.held_out_before or HeldOut(), self.held_out_after
        line = super().headline()
        if after:
            line += (f", held-out reward margin {fmt(before.margin)} -> {fmt(after.margin)}, "
                     f"KL {fmt(before.kl)} -> {fmt(after.kl)}")
        return line

    def extra_rows(self, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        before, after = self.held_out_before or HeldOut(), self.held_out_after or HeldOut()
        return [(f"held-out {label} (before -> after)", f"{cell(getattr(before, key))} -> {cell(getattr(after, key))}")
                for key, label in (("margin", "reward margin"), ("rewards_desirable", "desirable reward"),
                                   ("rewards_undesirable", "undesirable reward"), ("kl", "KL estimate"))
                if getattr(after, key) is not None]


def row_shape(spec: Stage, source: str) -> tuple[str, ...]:
    """Pairs or unpaired rows, by the first dataset's columns (after its `columns` mapping)."""
    first = spec.datasets[0]
    names = mixture.load_split(first, first.split, f"{source}: kto.datasets[0]").column_names
    renamed = {theirs: ours for ours, theirs in (first.columns or {}).items()}
    return PAIRS if set(PAIRS) <= {renamed.get(c, c) for c in names} else UNPAIRED


def unpaired_problem(row: dict) -> str | None:
    if not isinstance(row.get("label"), bool):
        return "label is not true/false"
    for key in ("prompt", "completion"):
        value = row.get(key)
        if not value or (isinstance(value, str) and not value.strip()):
            return f"empty {key}"
    if isinstance(row["completion"], list) and row["completion"][-1].get("role") != "assistant":
        return "completion does not end with an assistant message"
    return None


def clean(ds: Any) -> tuple[Any, Counter]:
    """Pairs as DPO cleans them; unpaired rows with a usable prompt, completion and true/false label."""
    if set(PAIRS) <= set(ds.column_names):
        return mixture.clean_preferences(ds)
    problems = [unpaired_problem(row) for row in ds]
    return ds.select([i for i, p in enumerate(problems) if p is None]), Counter(p for p in problems if p)


def feedback_counts(ds: Any, source: str) -> tuple[int, int]:
    """(desirable, undesirable) rows; KTO needs both, known before any model loads."""
    if set(PAIRS) <= set(ds.column_names):
        return len(ds), len(ds)
    good = sum(ds["label"])
    if good == 0 or good == len(ds):
        missing = "undesirable (label: false)" if good else "desirable (label: true)"
        raise UserError(f"{source}: the kto data has no {missing} rows after cleaning; KTO learns from both "
                        "(or use preference pairs: chosen/rejected columns, unpaired as TRL does)")
    return good, len(ds) - good


def run_kto(recipe: Recipe, overrides: list[str] = (), overwrite: bool = False,
            callbacks: list[Any] = ()) -> KTOResult | None:
    """Train the kto stage (publishing is `pipeline.run.run_stage`'s job). None off the main process."""
    spec, src = recipe.stage("kto"), recipe.source
    if spec is None:
        raise UserError(f"{src}: no kto section; add one with datasets and trainer settings")
    trainer_args = {k: v for k, v in spec.trainer.items() if k != "output_dir"}

    # 1. The recipe's rules ran in `preflight.check.before_stage`; here where the policy starts and the output.
    inference_template, _ = chat_template.resolve(recipe.chat_template, src, recipe.model, download=True)
    location = policy.location(recipe, "kto")
    start = stage.begin(recipe, "kto", overwrite)

    # 2. Data: pairs or unpaired rows, bad ones dropped and counted; both kinds of feedback must be there.
    columns = row_shape(spec, src)
    data, train, evaluation, dropped = policy.load_rows(start, spec, "kto", src, columns,
                                                        ("prompt",) if columns == PAIRS else (), KIND.clean,
                                                        trainer_args["seed"], "kto rows")
    desirable, undesirable = feedback_counts(train, src)

    # 3. The output directory, now that recipe and data are good.
    stage.claim(start, recipe, overrides, overwrite)

    # 4. Model and TRL's trainer (LoRA: the reference is the adapter disabled; else TRL's copy or precompute).
    from trl import KTOConfig, KTOTrainer

    policy.merge_upstream(start, recipe, location)
    tokenizer = modeling.load_tokenizer(location, recipe.model, inference_template)
    tokenizer.chat_template = policy.with_bos(inference_template, tokenizer)
    callbacks = [*tracking.configure(recipe, "kto", trainer_args, start.out), *callbacks]
    config = KTOConfig(output_dir=str(start.out), **trainer_args)
    model = modeling.load_model(location, recipe.model)  # after the config (ZeRO-3 loading, as in sft.py)
    trainer = KTOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=modeling.lora_config(spec.lora), callbacks=callbacks)
    tokenizer.chat_template = inference_template
    console.attach(trainer, KIND, train, evaluation, dropped, location, start.resume)

    # 5. Held-out figures (from TRL's own evaluation) before, train, after; save.
    before, after, result, wall = policy.train_between_held_out(
        trainer, start, evaluation, lambda: HeldOut.from_metrics(trainer.evaluate()))
    summary = KTOResult(
        stage="kto", **common_figures(trainer, result, wall, start.out, data["report"], dropped),
        held_out_before=before, held_out_after=after, train_rows=len(train), desirable=desirable,
        undesirable=undesirable)
    del model  # merging (LoRA) never holds two models
    if policy.finish(start, summary, trainer, spec.lora is not None, location, recipe) is None:
        return None
    print(f"\nKTO done in {wall:.1f}s: {summary.global_step} steps, {desirable} desirable and {undesirable} "
          f"undesirable completions\n  {summary.headline()}\n  {'adapter' if summary.adapter else 'model'} saved in "
          f"{summary.model_dir}")
    return summary


# --- what `check` and `check --show` do with KTO rows ------------------------------------------------------


def row_problem(row: dict, templates: tuple[str, str], stage: Stage) -> str | None:
    if set(PAIRS) <= set(row):
        return dpo.row_problem(row, templates, stage)
    problem = unpaired_problem(row)
    if problem or not isinstance(row["prompt"], list):
        return problem
    return mixture.conversation_problem(row["prompt"] + row["completion"]) or \
        render_problem(row["prompt"] + row["completion"], templates[0], False)


def example(row: dict, templates: tuple[str, str], stage: Stage) -> str:
    if set(PAIRS) <= set(row):
        return dpo.example(row, templates, stage)
    prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
    completion = row["completion"] if isinstance(row["completion"], list) else \
        [{"role": "assistant", "content": row["completion"]}]
    text, _ = chat_template.render(templates[0], prompt + completion)
    start = text.rfind(completion[-1]["content"])
    return f"--- {'desirable' if row['label'] else 'undesirable'}:\n{marked(text, [(start, len(text))])}"


def rules(recipe: Recipe, stage: Stage) -> list[str]:
    """TRL's KTO rules that would otherwise stop the run with a traceback after the model loaded."""
    src, errors = recipe.source, []
    if stage.setting("beta") <= 0:
        errors.append(f"{src}: kto.beta must be > 0 (TRL's default is 0.1)")
    if stage.setting("loss_type") != "apo_zero_unpaired":
        if stage.setting("per_device_train_batch_size") <= 1:
            errors.append(f"{src}: kto.per_device_train_batch_size must be > 1: KTO estimates its KL term from the "
                          "other completions of the batch (or set kto.loss_type=apo_zero_unpaired)")
        if stage.setting("train_sampling_strategy") != "sequential":
            errors.append(f"{src}: kto.train_sampling_strategy must be sequential: the KL completions are fixed per "
                          "batch (or set kto.loss_type=apo_zero_unpaired)")
    return errors


def holds_reference(stage: Stage) -> bool:
    return stage.lora is None and not stage.trainer.get("precompute_ref_log_probs")


KIND = StageKind(
    name="kto", label="KTO", title="Kahneman-Tversky optimization (unpaired feedback, after SFT)", unit="rows",
    eval_name="held-out rows", card_title="Kahneman-Tversky optimization (KTO) on desirable/undesirable feedback",
    card_training="Completions labelled desirable or undesirable (preference pairs count as one of each); no\n"
                  "pairing between them is needed.",
    trainer_config="trl.trainer.kto_config.KTOConfig", trainer_class="trl.KTOTrainer",
    trainer_module="trl.trainer.kto_trainer",
    columns=UNPAIRED, optional_columns=PAIRS, train_split="train", eval_split="test", starts_from="sft",
    lr_range=(1e-8, 1e-5), lr_range_lora=(1e-7, 1e-4), sequences_per_row=2, holds_reference=holds_reference,
    plots=(
        ("kto_loss.png", "KTO loss", "loss", [("log:loss", "train"), ("held:loss", "held-out (summary.json)")]),
        ("kto_rewards.png", "KTO rewards", "reward", [
            ("log:rewards/chosen", "desirable"), ("log:rewards/rejected", "undesirable"), ("log:kl", "KL estimate"),
            ("held:margin", "held-out margin (summary.json)")]),
    ),
    shown=(("kl", "kl", ".3f"), ("eval_kl", "eval_kl", ".3f")),
    rules=rules, clean=clean, row_problem=row_problem, example=example, run=run_kto, result=KTOResult,
)
