"""What is already in a stage's output directory, and what to do about it.

The public recipes pass `resume_from_checkpoint` blindly: into a finished directory they train zero
steps and report success. Here each directory records the fingerprint of the settings it was made
with; a re-run resumes only from checkpoints made under the same settings, and anything else stops
with a message that says what was found and what to pass.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from zephyr_train.errors import UserError

FINGERPRINT = "fingerprint.json"
SUMMARY = "summary.json"


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


def claim(directory: Path, fingerprint: dict, overwrite: bool = False) -> None:
    """Main process only: clear the directory if asked, and record the settings it is made with."""
    if overwrite and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str))
