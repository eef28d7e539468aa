"""`zephyr-train run`: SFT then DPO from one recipe, each stage in OUTPUT_DIR/<stage>.

A stage finished under the same settings (its recorded fingerprint) is skipped; one made under other
settings is run again from scratch, and so is everything after it (DPO's fingerprint includes
SFT's); an interrupted stage resumes from its last checkpoint. `--force` re-runs every stage. A
directory holding files zephyr-train did not make is never cleared without `--force`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zephyr_train import checkpoints, stage
from zephyr_train.errors import UserError
from zephyr_train.recipe import STAGES, Recipe, fingerprint


def run_pipeline(recipe: Recipe, overrides: list[str] = (), force: bool = False) -> dict[str, Any]:
    from zephyr_train.dpo import run_dpo
    from zephyr_train.sft import run_sft

    runners = {"sft": run_sft, "dpo": run_dpo}
    stages = [name for name in STAGES if getattr(recipe, name) is not None]
    if not stages:
        raise UserError(f"{recipe.source}: no sft or dpo section; nothing to run")
    results: dict[str, Any] = {}
    for name in stages:
        out = recipe.stage_dir(name)
        state = checkpoints.state_of(out, fingerprint(recipe, name))
        if state == "finished" and not force:
            print(f"{name}: finished under the same settings in {out}; skipped (--force runs it again)")
            results[name] = json.loads((out / checkpoints.SUMMARY).read_text())
            continue
        if state == "changed" and not force:
            print(f"{name}: {out} was made with other settings; running the stage again from scratch")
        results[name] = runners[name](recipe, overrides, overwrite=force or state == "changed")
    if not results.get(stages[-1]):
        return {}  # not the main process
    last = results[stages[-1]]
    final = Path(last.get("merged_model_dir") or last["model_dir"])
    summary = {"stages": results, "final_model": str(final),
               "final_adapter": last["model_dir"] if last.get("adapter") else None}
    Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(recipe.output_dir) / checkpoints.SUMMARY).write_text(json.dumps(summary, indent=2))
    from zephyr_train.report import write_report

    report = write_report(recipe.output_dir)
    print(f"\nrun done: final model in {final}; figures in {Path(recipe.output_dir) / checkpoints.SUMMARY}")
    for name, result in results.items():
        print(f"  {name}: {stage.headline(result)}")
    print(f"report: {report}")
    return summary
