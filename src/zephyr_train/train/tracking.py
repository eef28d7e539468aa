"""Experiment tracking: W&B / TensorBoard runs named and grouped per recipe run, and a log on disk.

transformers' W&B callback reuses whatever run is open, so in `zephyr-train run` DPO would log into
SFT's run with its step counter going backwards. `configure` therefore closes the previous stage's
run and opens this stage's itself: named `<group>-<stage>`, grouped by the run's output directory
name (or WANDB_RUN_GROUP), with the resolved (secret-free) recipe as its config and file. Every stage
also writes its log history to `<stage dir>/log_history.json` at each log, which the run report
reads, for finished and unfinished runs alike (a run with save_strategy=no has no trainer_state).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe, to_dict
from zephyr_train.run_files import LOG_HISTORY, RESOLVED_RECIPE


def reporters(trainer_args: dict[str, Any]) -> list[str]:
    value = trainer_args.get("report_to") or "none"
    names = [value] if isinstance(value, str) else list(value)
    return [] if names in (["none"], []) else names


def group_name(recipe: Recipe) -> str:
    """What ties a run's stages together: WANDB_RUN_GROUP if set, else the output directory's name."""
    return os.environ.get("WANDB_RUN_GROUP") or Path(recipe.output_dir).resolve().name


def configure(recipe: Recipe, stage: str, trainer_args: dict[str, Any], out: Path) -> list[Any]:
    """Call before the trainer is built; sets run_name in `trainer_args`, returns the tracking callbacks."""
    group = group_name(recipe)
    trainer_args.setdefault("run_name", f"{group}-{stage}")
    names = reporters(trainer_args)
    if "tensorboard" in names or "all" in names:
        # one directory per run, one sub-directory per stage: `tensorboard --logdir OUTPUT_DIR/tensorboard`
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(recipe.output_dir) / "tensorboard" / stage)
    if "wandb" in names or "all" in names:
        start_wandb(recipe, stage, trainer_args["run_name"], group, out)
    return [history_callback(out)]


def start_wandb(recipe: Recipe, stage: str, run_name: str, group: str, out: Path) -> None:
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()  # the previous stage's run
    os.environ.setdefault("WANDB_PROJECT", "zephyr-train")
    wandb.init(project=os.environ["WANDB_PROJECT"], name=run_name, group=group, job_type=stage,
               dir=os.environ.get("WANDB_DIR") or recipe.output_dir, config={"recipe": to_dict(recipe)})
    resolved = out / RESOLVED_RECIPE
    if resolved.exists():
        wandb.save(str(resolved), base_path=str(out), policy="now")


def history_callback(out: Path) -> Any:
    from transformers import TrainerCallback

    class WriteHistory(TrainerCallback):
        """Keeps `<stage dir>/log_history.json` equal to the trainer's log history (resumes included)."""

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                # a wall-clock stamp per entry gives the report its throughput curve
                state.log_history[-1].setdefault("time", round(time.time(), 3))
                write_json(out / LOG_HISTORY, state.log_history)

    return WriteHistory()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
