"""What every training stage does around its trainer: precision, the output directory, logging.

Both stage flows (`sft.py`, `dpo.py`) call `begin` after their cheap checks and `claim` once their
data is known good, so a typo never costs a finished run and every process agrees on resuming.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train import checkpoints
from zephyr_train.recipe import Recipe, fingerprint, save_resolved


def precision_of(trainer_args: dict[str, Any]) -> str:
    return "bf16" if trainer_args.get("bf16") else "fp16" if trainer_args.get("fp16") else "no"


def pin_precision(wanted: str) -> str | None:
    """Make the recipe's precision the one accelerate uses; returns the launcher's if it differed.

    `accelerate launch` with a bf16 config exports ACCELERATE_MIXED_PRECISION=bf16, which
    transformers applies whenever the recipe leaves bf16 off: on a CPU that made runs 3.8x slower.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    os.environ["ACCELERATE_MIXED_PRECISION"] = wanted
    return launcher if launcher and launcher != wanted else None


@dataclass
class Start:
    name: str
    out: Path
    settings: dict
    resume: Path | None
    state: Any  # accelerate.PartialState
    log: Callable[..., None]


def begin(recipe: Recipe, name: str, overwrite: bool) -> Start:
    """Inspect the output directory (read-only) and set precision; raises UserError before any load."""
    out, trainer_args = recipe.stage_dir(name), getattr(recipe, name).trainer
    settings = fingerprint(recipe, name)
    resume = checkpoints.inspect(out, settings, name, overwrite)
    launcher = pin_precision(precision_of(trainer_args))

    from accelerate import PartialState

    state = PartialState()
    log = print if state.is_main_process else (lambda *a, **k: None)
    if launcher:
        wanted = precision_of(trainer_args).replace("no", "fp32")
        log(f"note: the launcher asked for {launcher} mixed precision; the recipe's {wanted} is used "
            f"(set {name}.bf16 or {name}.fp16 in the recipe to change it)")
    return Start(name, out, settings, resume, state, log)


def claim(start: Start, recipe: Recipe, overrides: list[str], overwrite: bool) -> None:
    """Main process records the settings (or keeps the directory to resume); all processes then agree."""
    if start.state.is_main_process and start.resume is None:
        checkpoints.claim(start.out, start.settings, overwrite)
        save_resolved(recipe, start.out, overrides)
    start.state.wait_for_everyone()
    if start.resume is not None:
        start.log(f"resuming from {start.resume} (same settings as recorded in {start.out / checkpoints.FINGERPRINT})")


def log_dropped(start: Start, dropped: dict, overlap: int) -> None:
    for reason, count in sorted(dropped.items()):
        start.log(f"data: {count} rows: {reason}")
    if overlap:
        start.log(f"data: {overlap} training rows removed: prompt also in the eval set")


def headline(result: dict[str, Any]) -> str:
    """A stage's figures in one line: the end of each DPO stage and of a run print the same words."""
    def f(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    line = f"train loss {f(result.get('train_loss_first'))} -> {f(result.get('train_loss_last'))}"
    if "eval_loss" in result:
        line += f", eval loss {f(result['eval_loss'])}"
    before, after = result.get("held_out_before") or {}, result.get("held_out_after") or {}
    if after:
        line += (f", held-out preference accuracy {f(before.get('accuracy'))} -> {f(after.get('accuracy'))}, "
                 f"reward margin {f(before.get('margin'))} -> {f(after.get('margin'))}")
    return line
