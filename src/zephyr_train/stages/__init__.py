"""The stage registry: every training stage kind, in the order `run` trains them.

A kind is one module here that builds a `config.stage_kind.StageKind` (`KIND`): its recipe section and
defaults, the TRL trainer it drives, its rows, its figures, its `check` rules and memory, its words.
Everything else (the CLI's subcommands, `run`'s order and hand-over, `check`, the report, the cards,
push, demo and export) iterates `KINDS`. Adding a kind: docs/architecture.md ("Adding a stage").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config import recipe as recipes
from zephyr_train.config.recipe import Recipe
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.stages import dpo, kto, orpo, sft
from zephyr_train.train.results import StageResult

KINDS: Mapping[str, StageKind] = {kind.name: kind for kind in (sft.KIND, dpo.KIND, kto.KIND, orpo.KIND)}  # run order


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """A recipe file with every registered kind's section (`config.recipe.load_recipe`)."""
    return recipes.load_recipe(path, list(overrides), KINDS)


def build_recipe(raw: dict, source: str) -> Recipe:
    return recipes.build_recipe(raw, source, KINDS)


def load_resolved(stage_dir: Path) -> Recipe:
    """The recipe a stage was made with, as it recorded it (for push and report)."""
    return recipes.load_resolved(stage_dir, KINDS)


def result_of(raw: dict[str, Any], kind: str | None = None) -> StageResult:
    """A stage's figures, typed by the kind its summary names, else by `kind` (summaries written before the
    registry have no `stage` key; their other keys load as they are)."""
    raw = {**raw, "stage": raw.get("stage") or kind or ""}
    spec = KINDS.get(raw["stage"])
    return spec.result.from_json(raw) if spec else StageResult.from_json(raw)


def read_result(stage_dir: Path, kind: str | None = None) -> StageResult | None:
    """The figures in STAGE_DIR/summary.json (a `kind` stage), None when the stage has not finished."""
    path = Path(stage_dir) / run_files.SUMMARY
    return result_of(json.loads(path.read_text()), kind) if path.is_file() else None
