"""A stage's figures in words: the one formatter the console, the report and the model card share."""

from __future__ import annotations

from typing import Any


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
