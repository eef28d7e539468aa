"""A card in every stage folder when the stage finishes, not only when it is pushed.

After a stage (main process), `finish_stage` makes the adapter's base reference portable (`portable`) and
writes the project's model card (`model_card`) in the stage folder, and in `merged/` for a LoRA stage,
replacing TRL's card or PEFT's stub. Kept apart from `portable`, which the loaders (`chat`, `merge`, the
Hub push) import, so loading a model never depends on the card and Hub modules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe
from zephyr_train.inference.portable import make_portable, portable_base
from zephyr_train.publish import model_card
from zephyr_train.publish.hub import base_of
from zephyr_train.run_files import ADAPTER_CONFIG, MERGED
from zephyr_train.stages import read_result

CARD = "README.md"


def write_card(path: Path, card: Any) -> Path:
    tmp = path / (CARD + ".tmp")
    tmp.write_text(str(card), encoding="utf-8")
    os.replace(tmp, path / CARD)
    return path / CARD


def here(folder: Path, run_dir: Path) -> str:
    """How a card names its own folder: from the run folder's parent (`smoke/dpo`), never an absolute path."""
    try:
        return (run_dir.name / folder.resolve().relative_to(run_dir.resolve())).as_posix()
    except ValueError:
        return folder.name


def finish_stage(recipe: Recipe, stage: str, stage_dir: Path | None = None) -> list[Path]:
    """At the end of a stage (main process): portable base references, then the project's model card in
    the stage folder (and in `merged/` for a LoRA stage), replacing TRL's card or PEFT's stub."""
    stage_dir = Path(stage_dir or recipe.stage_dir(stage))
    run_dir = Path(recipe.output_dir)
    summary = read_result(stage_dir, stage)
    upstream = recipe.upstream(stage)
    hub_base = base_of(recipe, stage) if recipe.hub else model_card.hub_id(recipe.model.name_or_path)
    if upstream is not None and not recipe.hub:
        hub_base = None  # DPO trained on this run's SFT result, not on the recipe's model
    name = f"{run_dir.name}-{stage}"
    written = []
    if (stage_dir / ADAPTER_CONFIG).exists():
        base = make_portable(stage_dir, run_dir, hub_base)
        written.append(write_card(stage_dir, model_card.make_card(
            recipe, stage, name, "adapter", hub_base, base, summary, local=here(stage_dir, run_dir))))
        merged = stage_dir / MERGED
        if (merged / "config.json").exists():
            written.append(write_card(merged, model_card.make_card(
                recipe, stage, f"{name}-merged", "merged", hub_base, base, summary, local=here(merged, run_dir))))
    elif (stage_dir / "config.json").exists():
        base = recipe.model.name_or_path if upstream is None else \
            f"{portable_base(str(recipe.stage_dir(upstream.kind)), run_dir)} (this run's {upstream.spec.label} stage)"
        written.append(write_card(stage_dir, model_card.make_card(
            recipe, stage, name, "model", hub_base, base, summary, local=here(stage_dir, run_dir))))
    return written
