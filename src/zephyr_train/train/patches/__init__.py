"""The TRL patches, one registry and one entry point: `plan` before the model loads, `build_trainer` after.

Where TRL 1.16 or transformers 5 is slow or lacks a recipe key on our users' set-ups:
  - `packing` (SFT): packed rows kept as rows, each example attended on its own (`segment_attention`)
    where FlashAttention is missing (TRL's one flattened row cost 4.3x the step time on a CPU);
  - `lm_head` (SFT): a dense head on labelled positions where TRL's Triton head cannot run (~40% of a CPU step);
  - `dpo_log_probs` (DPO, with `pair_packing`): policy and reference log-probs of packed pairs at completion
    positions only, each prompt once (4.3x plain TRL's answer tokens/s at 0.42x its peak RSS, README);
  - `prompt_length` (DPO): `dpo.max_prompt_length`, which TRL 1.16 dropped;
  - `lean_layers` (SFT, DPO): RMSNorm and SwiGLU keeping a third fewer activations where Liger's kernels
    cannot run (CPUs).
Each declares what it relies on (`contract.Patch`); a stage kind names the patches it uses
(`StageKind.patches`) and builds its trainer through `build_trainer`. Every patch's state reaches the
console and `summary.json` (`patches`: "applied" or "skipped: <reason>"); the recipe key `patches: false`
turns them all off, so the same recipe runs as plain TRL for a side-by-side comparison.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zephyr_train.errors import UserError
from zephyr_train.preflight import environment
from zephyr_train.train.patches import dpo_log_probs, lean_layers, lm_head, packing, prompt_length
from zephyr_train.train.patches.contract import Patch, Setup, Unwanted

PATCHES: Mapping[str, Patch] = {p.name: p for p in (packing.PATCH, lm_head.PATCH, dpo_log_probs.PATCH,
                                                   prompt_length.PATCH, lean_layers.PATCH)}
APPLIED = "applied"
OFF = "patches: false in the recipe (plain TRL)"


def versions() -> str:
    """The installed TRL and transformers, read from their metadata (no import)."""
    found = environment.versions(("trl", "transformers"))
    return f"TRL {found['trl']}, transformers {found['transformers']}"


@dataclass
class Plan:
    """Which of a stage's patches this run installs, and why the others are skipped."""

    setup: Setup
    names: tuple[str, ...] = ()  # the stage kind's patches, in its order
    active: list[Patch] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # summary.json's `patches`, filled in by build_trainer

    def applied(self, name: str) -> bool:
        return self.states.get(name) == APPLIED


def mismatch(patch: Patch, problem: str, log: Callable[[str], None]) -> str:
    """A patch whose TRL names changed: stop (it changes what is trained) or fall back to plain TRL (speed only)."""
    if patch.on_mismatch == "error":
        raise UserError(error_line(patch, problem))
    reason = f"{problem} ({versions()}); plain TRL instead: same results, slower"
    log(f"patch {patch.name} not applied: {reason}")
    return reason


def errors(names: Sequence[str], setup: Setup) -> list[str]:
    """`check`'s view, from TRL's source without importing it: the one-line errors `plan` would stop with
    (the patches that change what is trained)."""
    found = []
    for name in names:
        patch = PATCHES[name]
        if patch.on_mismatch != "error" or not setup.enabled or patch.unwanted(setup) is not None:
            continue
        problems = patch.problems(setup, static=True)
        if problems:
            found.append(error_line(patch, "; ".join(problems)))
    return found


def error_line(patch: Patch, problem: str) -> str:
    return f"patch {patch.name} ({patch.does}) cannot install: {problem} ({versions()}); {patch.fix}"


def plan(names: Sequence[str], setup: Setup, log: Callable[[str], None]) -> Plan:
    """Decide each patch before the model loads: off by the recipe, not wanted here, or its contract broken
    (a one-line error, or a printed fallback) - all known in seconds."""
    result = Plan(setup, tuple(names))
    for name in names:
        patch = PATCHES[name]
        reason = OFF if not setup.enabled else patch.unwanted(setup)
        if reason is None:
            problems = patch.problems(setup)
            reason = mismatch(patch, "; ".join(problems), log) if problems else None
        if reason is None:
            result.active.append(patch)
        else:
            note = patch.when_off(setup) if reason == OFF else None
            if note:
                log(f"patch {patch.name} off: {note}")
            result.states[name] = f"skipped: {reason}"
    return result


def build_trainer(chosen: Plan, trainer_class: type, log: Callable[[str], None], **kwargs: Any) -> Any:
    """`trainer_class(**kwargs)` with the planned patches around its `__init__` and on the built trainer."""
    with contextlib.ExitStack() as stack:
        for patch in chosen.active:
            stack.enter_context(patch.during_init(chosen.setup))
        trainer = trainer_class(**kwargs)
    for patch in chosen.active:
        outcome = patch.after_init(trainer, chosen.setup)
        if isinstance(outcome, Unwanted):
            chosen.states[patch.name] = f"skipped: {outcome.reason}"
        elif outcome:
            chosen.states[patch.name] = f"skipped: {mismatch(patch, outcome, log)}"
        else:
            chosen.states[patch.name] = APPLIED
    chosen.states = {name: chosen.states[name] for name in chosen.names}  # the kind's order
    log("TRL patches: " + "; ".join(f"{name} {state}" for name, state in chosen.states.items()))
    return trainer
