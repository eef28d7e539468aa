"""`zephyr-train check RECIPE --show N`: N training examples as the model will see them, trained text marked.

`check` said "the first rows render" but never showed one, so a template that trains on the prompt, or
drops the EOS from the loss, went unseen until the model misbehaved. Like axolotl's `preprocess --debug`,
this prints the first N usable rows of each stage's first dataset rendered with the recipe's training
template, the text that carries loss between `[[` and `]]`, as each stage kind renders its rows
(`StageKind.example`): for SFT the `{% generation %}` spans (every token when assistant_only_loss is off),
for DPO the chosen and the rejected answer after the shared prompt.
Offline, no tokenizer, no torch: it reads local data only (a Hub dataset is named, not downloaded).
"""

from __future__ import annotations

from zephyr_train.config.recipe import Recipe
from zephyr_train.data import chat_template, mixture
from zephyr_train.errors import UserError
from zephyr_train.preflight.check import first_rows

OPEN, CLOSE = "[[", "]]"
SCAN = 50  # rows read to find N usable ones


def marked(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span wrapped in [[ ]]."""
    out, at = [], 0
    for start, end in sorted(spans):
        out += [text[at:start], OPEN, text[start:end], CLOSE]
        at = end
    return "".join([*out, text[at:]])


def show(recipe: Recipe, n: int) -> list[str]:
    """The lines `check --show N` prints."""
    if n < 1:
        raise UserError(f"--show must be 1 or more, got {n}")
    inference, training = chat_template.resolve(recipe.chat_template, recipe.source)
    lines = [f"examples: the text that carries loss is between {OPEN} and {CLOSE}"]
    for stage in recipe.stages:
        name, spec = stage.kind, stage.datasets[0]
        kind, path = mixture.locate(spec)
        if kind in ("hub", "missing"):
            lines.append(f"{name}: {spec.path} is {'on the Hub' if kind == 'hub' else 'missing'}: not opened "
                         "(--show reads local data only)")
            continue
        rows, _, _ = first_rows(path, spec.split, max(n, SCAN))
        renames = spec.columns or {}
        shown = 0
        for i, raw in enumerate(rows):
            row = {key: raw.get(renames.get(key, key)) for key in (*stage.spec.columns, *stage.spec.optional_columns)}
            problem = stage.spec.row_problem(row, (inference, training), stage)
            if problem:
                lines.append(f"{name} row {i}: dropped in training ({problem})")
                continue
            shown += 1
            lines += [f"=== {name} example {shown} ({spec.path} {spec.split}, row {i})",
                      stage.spec.example(row, (inference, training), stage)]
            if shown == n:
                break
    return lines
