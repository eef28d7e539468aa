"""A stage's output directory through its life: what is in it, claiming it, resuming in it.

The public recipes pass `resume_from_checkpoint` blindly: into a finished directory they train zero
steps and report success. Here each directory records the fingerprint of the settings it was made
with; a re-run resumes only from checkpoints made under the same settings, and anything else stops
with a message that says what was found and what to pass.

Both stage flows (`sft.py`, `dpo.py`) call `begin` after their cheap checks (it only reads) and `claim`
once their data is known good, so a typo never costs a finished run and every process agrees on resuming.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe, fingerprint, save_resolved
from zephyr_train.errors import UserError
from zephyr_train.preflight import launcher
from zephyr_train.run_files import FINGERPRINT, SUMMARY


def last_checkpoint(directory: Path) -> Path | None:
    """The highest-step checkpoint that finished saving (it has trainer_state.json)."""
    found = [p for p in directory.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)
             and (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return f"{path}: {old!r} then, {new!r} now"


def state_of(directory: Path, fingerprint: dict) -> str:
    """"empty", "foreign" (files not made by zephyr-train), "changed" (made under other settings),
    "finished" (same settings, summary written) or "open" (same settings, maybe a checkpoint)."""
    if not directory.exists() or not any(directory.iterdir()):
        return "empty"
    recorded = directory / FINGERPRINT
    if not recorded.exists():
        return "foreign"
    if json.loads(recorded.read_text())["digest"] != fingerprint["digest"]:
        return "changed"
    return "finished" if (directory / SUMMARY).exists() else "open"


def inspect(directory: Path, fingerprint: dict, stage: str, overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from, or None to start; UserError when neither is right. Reads only,
    so every process of a distributed launch can ask and get the same answer."""
    again = "pass --overwrite to start over, or output_dir=NEW_DIR for a new directory"
    state = "empty" if overwrite else state_of(directory, fingerprint)
    if state == "foreign":
        raise UserError(f"{directory} is not empty and was not made by zephyr-train; {again}")
    if state == "changed":
        old = json.loads((directory / FINGERPRINT).read_text())
        change = _first_difference(old["settings"], fingerprint["settings"])
        raise UserError(f"{directory} holds a {stage} run made with other settings ({change}); "
                        f"its checkpoints cannot be resumed under these; {again}")
    if state == "finished":
        steps = json.loads((directory / SUMMARY).read_text()).get("global_step", "?")
        raise UserError(f"{directory} already holds a finished {stage} run ({steps} steps, {SUMMARY}); "
                        f"nothing to train; {again}")
    return last_checkpoint(directory) if state == "open" else None


def claim_dir(directory: Path, fingerprint: dict, overwrite: bool = False) -> None:
    """Main process only: clear the directory if asked, and record the settings it is made with."""
    if overwrite and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str))


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
    out, trainer_args = recipe.stage_dir(name), recipe.stage(name).trainer
    settings = fingerprint(recipe, name)
    resume = inspect(out, settings, name, overwrite)
    asked_for = launcher.pin_precision(launcher.precision_of(trainer_args))

    state = launcher.process_state(trainer_args)
    if state.num_processes > 1:  # rank 0's reading for all: one checkpoint still being written must not split them
        from accelerate.utils import broadcast_object_list

        resume = broadcast_object_list([resume])[0]
    log = print if state.is_main_process else (lambda *a, **k: None)
    if asked_for:
        wanted = launcher.precision_of(trainer_args).replace("no", "fp32")
        log(f"note: the launcher asked for {asked_for} mixed precision; the recipe's {wanted} is used "
            f"(set {name}.bf16 or {name}.fp16 in the recipe to change it)")
    return Start(name, out, settings, resume, state, log)


def claim(start: Start, recipe: Recipe, overrides: list[str], overwrite: bool) -> None:
    """Main process records the settings (or keeps the directory to resume); all processes then agree."""
    if start.state.is_main_process and start.resume is None:
        claim_dir(start.out, start.settings, overwrite)
        save_resolved(recipe, start.out, overrides)
    start.state.wait_for_everyone()
    if start.resume is not None:
        start.log(f"resuming from {start.resume} (same settings as recorded in {start.out / FINGERPRINT})")


def log_dropped(start: Start, dropped: dict, overlap: int) -> None:
    for reason, count in sorted(dropped.items()):
        start.log(f"data: {count} rows: {reason}")
    if overlap:
        start.log(f"data: {overlap} training rows removed: prompt also in the eval set")
