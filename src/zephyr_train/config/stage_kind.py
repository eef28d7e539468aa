"""What a stage kind declares: the one object through which the layers below `stages/` know SFT, DPO, ...

A stage kind is one module in `stages/` (`stages/sft.py`, `stages/dpo.py`) that builds one `StageKind` and
is registered by one line in `stages/__init__.py`. Recipe loading, `check`, the memory estimate, the
console and the report never test a kind's name: they read what the kind declares here, through the
`Stage.spec` every recipe section carries (the registry is handed to `config.recipe.build_recipe`, so
this package needs nothing from above it). docs/architecture.md lists the steps to add a kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zephyr_train.config.trainer_fields import Field, trainer_fields


def _no_rules(*_: Any) -> list[str]:
    return []


def _no_validation(*_: Any) -> None:
    return None


def _no_reference(_: Any) -> bool:
    return False


@dataclass(frozen=True, kw_only=True)
class StageKind:
    """A training stage's declaration. Naming, recipe section and data come first; behaviour (callables
    the stage module supplies) last. Every callable receives the recipe section (`Stage`) it concerns."""

    # --- naming: recipe section, CLI subcommand, stage folder, console/report/card words
    name: str  # "sft": the recipe section, the CLI subcommand and the folder OUTPUT_DIR/sft
    label: str  # "SFT": console banner, report headings, model card, Hub commit messages
    title: str  # "supervised fine-tuning (Zephyr stage 1)": the banner's and `--help`'s line
    card_title: str  # the model card's "Stage:" line: "distilled supervised fine-tuning (dSFT, Zephyr stage 1)"
    card_training: str = ""  # the card's sentence on how this stage learns, after its "Stage:" line
    card_limits: str = ""  # the card's sentence on what this stage alone has not had (under "Bias, risks")
    unit: str  # what one training row is, plural: "conversations", "pairs"
    eval_name: str = "eval"  # the console's name for its held-out scoring ("held-out pairs")
    token_throughput: bool = False  # the console counts the label tokens of training batches for tokens/s
    # --- the recipe section: TRL's config class and our defaults where TRL's are wrong for these users
    trainer_config: str  # the TRL config dataclass, dotted: "trl.trainer.sft_config.SFTConfig"
    trainer_class: str  # the TRL trainer it drives, dotted: "trl.SFTTrainer"
    trainer_module: str  # the trainer's source, whose constants check list items (DPO's loss names)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: type | None = None  # dataclass of the section's own keys beside TRL's fields (DPO: max_prompt_length)
    # --- rows: the columns a dataset must have, and where the kind starts from
    columns: tuple[str, ...]
    optional_columns: tuple[str, ...] = ()
    train_split: str = "train"  # the published dataset's splits for this kind (ultrachat_200k: train_sft, test_sft);
    eval_split: str = "test"  # defaults for handbook configs, examples in hints
    starts_from: str | None = None  # the kind whose result this one starts from when the recipe has it
    packs_rows: bool = False  # rows may be packed (TRL's `packing`), so step counts are an upper bound
    # --- check: learning-rate sanity ranges, memory, the kind's own rules
    lr_range: tuple[float, float]  # full fine-tuning
    lr_range_lora: tuple[float, float]
    sequences_per_row: int = 1  # forward sequences per row (DPO: chosen and rejected): activation memory
    holds_reference: Callable[[Any], bool] = _no_reference  # a second (reference) model in memory
    validate: Callable[[Any, str], None] = _no_validation  # (stage, source): load-time rules, raise UserError
    rules: Callable[[Any, Any], list[str]] = _no_rules  # (recipe, stage): `check`'s errors for this kind
    # --- data rendering for `check`: (row, (inference, training) templates, stage) -> problem / example text
    clean: Callable[[Any], tuple[Any, Any]]  # dataset -> (kept rows, Counter of why rows were dropped)
    row_problem: Callable[[dict, tuple[str, str], Any], str | None]
    example: Callable[[dict, tuple[str, str], Any], str]
    # --- the run report's plots of this stage: (file, title, y label, [(source, label)]); source "log:<key>"
    # reads the log history, "summary:<field>" and "held:<field>" the result (publish/report_curves.py)
    plots: tuple[tuple[str, str, str, list[tuple[str, str]]], ...] = ()
    # --- the console's log lines: the kind's own figures, (log key, short name, format), after the losses
    shown: tuple[tuple[str, str, str], ...] = ()
    # --- the TRL patches its trainer is built with (train/patches/: `packing`, `lm_head`, ...), in install order
    patches: tuple[str, ...] = ()
    # --- the flow and its figures
    run: Callable[..., Any]  # (recipe, overrides, overwrite, callbacks) -> result (None off the main process)
    result: type  # the typed figures the stage writes to summary.json (a `train.results.StageResult`)

    def fields(self) -> dict[str, Field]:
        """TRL's config fields, defaults and choices, read from the installed source (no import)."""
        return trainer_fields(self.trainer_config, self.trainer_module)

    def has_option(self, key: str) -> bool:
        """Whether `key` is one of this kind's own recipe keys (`options`)."""
        return self.options is not None and key in {f.name for f in dataclasses.fields(self.options)}

    def owners(self, key: str, kinds: Mapping[str, StageKind]) -> list[str]:
        """The other kinds that take `key` (DPO's reference settings, for an orpo section's error)."""
        return [k.name for k in kinds.values() if k.name != self.name and (key in k.fields() or k.has_option(key))]

    def lr_sane(self, lora: bool) -> tuple[float, float]:
        return self.lr_range_lora if lora else self.lr_range


def is_final(name: str, kinds: Mapping[str, StageKind]) -> bool:
    """Whether a kind's result is a final model: no registered kind starts from it (DPO yes, SFT no). Final
    models go to hub.repo_id and are "the final model" in the report."""
    return not any(kind.starts_from == name for kind in kinds.values())
