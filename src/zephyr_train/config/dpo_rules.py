"""The rules TRL's `DPOTrainer.__init__` applies to loss settings, checked when the recipe is read.

TRL raises these only when the trainer is built, after the model has loaded (a traceback and exit 1,
with the output directory already claimed). Now that every `loss_type` TRL implements can be written
in a recipe, they must be one-line errors up front instead. The set of losses that accept an
f-divergence is read from the trainer's source; tests/config/test_dpo_rules.py builds the real trainer
for each rule, so a TRL release that changes one fails a test.
"""

from __future__ import annotations

import ast
from functools import cache
from typing import Any

from zephyr_train.config.trainer_fields import Field, module_file
from zephyr_train.errors import UserError


@cache
def f_divergence_losses(trainer_module: str = "trl.trainer.dpo_trainer") -> frozenset[str]:
    """`f_divergence_loss_types` as DPOTrainer defines it."""
    tree = ast.parse(module_file(trainer_module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "f_divergence_loss_types":
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


def check_losses(trainer: dict[str, Any], source: str, name: str, fields: dict[str, Field]) -> None:
    """`trainer`: the section's TRL fields as the recipe sets them; `fields`: the config's (for defaults)."""

    def value(key: str) -> Any:
        return trainer.get(key, fields[key].default)

    losses = value("loss_type") or []
    divergence, smoothing = value("f_divergence_type"), value("label_smoothing")
    allowed = f_divergence_losses()
    if divergence != "reverse_kl" and allowed and not set(losses) <= allowed:
        raise UserError(f"{source}: {name}.f_divergence_type={divergence} works only with the losses "
                        f"{', '.join(sorted(allowed))}; {name}.loss_type has {', '.join(sorted(set(losses) - allowed))}"
                        f" (set {name}.f_divergence_type=reverse_kl)")
    if value("use_weighting") and {"aot", "aot_unpaired"} & set(losses):
        raise UserError(f"{source}: {name}.use_weighting is not implemented for the aot losses (they sort samples); "
                        f"set {name}.use_weighting=false or pick another loss_type")
    if "exo_pair" in losses and smoothing == 0.0:
        raise UserError(f"{source}: {name}.loss_type exo_pair needs {name}.label_smoothing > 0 (the EXO paper "
                        f"recommends 1e-3)")
    if "robust" in losses and not 0.0 <= smoothing < 0.5:  # TRL only warns; its 1 / (1 - 2 * eps) blows up at 0.5
        raise UserError(f"{source}: {name}.label_smoothing must be in [0, 0.5) for the robust loss (the chance a "
                        f"preference label is flipped; the paper suggests 0.1), got {smoothing}")
