"""The launch a recipe is made for, so `check` plans with it instead of guessing one GPU and no config.

`check recipes/zephyr-7b-beta/full.yaml --gpu h100` used to plan for a single GPU with no accelerate
config, although that recipe is made for 8 GPUs under DeepSpeed ZeRO-3, and then called it out of memory.
A recipe now records its intended launch:

    launch:
      accelerate_config: configs/deepspeed_zero3.yaml
      gpus: 8

`check` uses it unless `--accelerate-config` / `--gpus` are given, says where the setup came from, and
prints every setup that would fit as exact flags to paste (`check` to confirm, `accelerate launch` to run).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from zephyr_train.config.recipe import Recipe, build_section
from zephyr_train.errors import UserError


@dataclass
class LaunchPlan:
    accelerate_config: str | None = None  # an accelerate config file, relative to the project or absolute
    gpus: int | None = None  # processes in all


def plan_of(recipe: Recipe) -> LaunchPlan | None:
    """The recipe's `launch` section, checked (unknown keys, types, a config file that exists)."""
    if recipe.launch is None:
        return None
    plan = build_section(LaunchPlan, recipe.launch, recipe.source, "launch.")
    if plan.gpus is not None and plan.gpus < 1:
        raise UserError(f"{recipe.source}: launch.gpus must be 1 or more, got {plan.gpus}")
    if plan.accelerate_config and not Path(plan.accelerate_config).exists():
        raise UserError(f"{recipe.source}: launch.accelerate_config {plan.accelerate_config} does not exist; name "
                        "one of configs/*.yaml (paths are relative to where zephyr-train runs)")
    return plan


def gpus_of(recipe: Recipe) -> int | None:
    """The GPUs the recipe is made for (its global batch is meant on those), if it says."""
    plan = plan_of(recipe)
    return plan.gpus if plan else None


def choose(recipe: Recipe, config: str | None, gpus: int | None) -> tuple[str | None, int | None, str | None]:
    """(accelerate config, GPUs, a note saying where they came from): the flags win over the recipe."""
    plan = plan_of(recipe)
    if plan is None or (config is not None and gpus is not None):
        return config, gpus, None
    used = []
    if config is None and plan.accelerate_config:
        config = plan.accelerate_config
        used.append(f"--accelerate-config {config}")
    if gpus is None and plan.gpus:
        gpus = plan.gpus
        used.append(f"--gpus {gpus}")
    note = f"launch: the recipe's launch section ({', '.join(used)}); pass the flags to plan another" if used \
        else None
    return config, gpus, note


def launch_command(recipe: Recipe, config: str, gpus: int, overrides: list[str]) -> str:
    """The `accelerate launch` line that runs the recipe's stages on this setup."""
    return shlex.join(["accelerate", "launch", "--config_file", config, "--num_processes", str(gpus), "-m",
                       "zephyr_train", "run", recipe.source, *overrides])


def setup_flags(recipe: Recipe, config: str, gpus: int, overrides: list[str], memory_gib: float | None) -> str:
    """The exact commands for one setup: the check that confirms it, then the launch that runs it."""
    check = ["zephyr-train", "check", recipe.source, *overrides, "--accelerate-config", config, "--gpus", str(gpus)]
    if memory_gib:
        check += ["--gpu-memory", f"{memory_gib:g}"]
    return f"{shlex.join(check)}\n      then: {launch_command(recipe, config, gpus, overrides)}"
