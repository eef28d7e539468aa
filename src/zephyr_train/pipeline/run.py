"""`zephyr-train run`: every stage of one recipe in the registry's order, each in OUTPUT_DIR/<stage>.

A stage finished under the same settings (its recorded fingerprint) is skipped; one made under other
settings is run again from scratch, and so is everything after it (DPO's fingerprint includes
SFT's); an interrupted stage resumes from its last checkpoint. `--force` re-runs every stage. A
directory holding files zephyr-train did not make is never cleared without `--force`.

This is the orchestration layer: it sits above the stages (`stages/`), publication (`publish/`) and the
eval stage (`eval/`), and is the only place that calls all three.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config.recipe import Recipe, fingerprint
from zephyr_train.errors import UserError
from zephyr_train.eval import stage as eval_stage
from zephyr_train.inference import modeling
from zephyr_train.preflight import environment, launcher
from zephyr_train.publish import hub, stage_cards
from zephyr_train.publish.report import write_report
from zephyr_train.stages import read_result
from zephyr_train.train import console, stage_dir
from zephyr_train.train.results import StageResult


def run_stage(recipe: Recipe, kind: str, overrides: list[str] = (), overwrite: bool = False) -> StageResult | None:
    """One stage, then its publication: the stage trains and saves, the Hub push happens here, after it
    (and checkpoint pushes through the callbacks handed in). Returns the stage's figures (None off the main
    process)."""
    quant = recipe.model.quantization
    console.quiet_libraries(bool(quant and (quant.load_in_4bit or quant.load_in_8bit)))
    out = recipe.stage_dir(kind)
    result = recipe.kinds[kind].run(recipe, overrides, overwrite=overwrite,
                                    callbacks=hub.save_callbacks(recipe, kind, out))
    if result:
        stage_cards.finish_stage(recipe, kind, out)  # portable base references, the project's card in the folder
        hub.push_stage(recipe, kind, out)
    from accelerate import PartialState

    PartialState().wait_for_everyone()  # the next stage reads this one's summary.json, written by the main process
    modeling.whole_models_from_now()  # the report and eval load models on the main process alone
    return result


def run_pipeline(recipe: Recipe, overrides: list[str] = (), force: bool = False) -> dict[str, Any]:
    started = time.time()
    stages = [stage.kind for stage in recipe.stages]
    if not stages:
        raise UserError(f"{recipe.source}: no {' or '.join(recipe.kinds)} section; nothing to run")
    if recipe.eval is not None:  # the judge's key and the eval inputs, checked before anything trains
        eval_stage.preflight(recipe)
    results: dict[str, StageResult | None] = {}
    say = print if launcher.main_process() else (lambda *args: None)
    for name in stages:
        out = recipe.stage_dir(name)
        state = stage_dir.state_of(out, fingerprint(recipe, name))
        if state == "finished" and not force:
            say(f"{name}: finished under the same settings in {out}; skipped (--force runs it again)")
            results[name] = read_result(out, name)
            continue
        if state == "changed" and not force:
            say(f"{name}: {out} was made with other settings; running the stage again from scratch")
        results[name] = run_stage(recipe, name, overrides, overwrite=force or state == "changed")
    if not launcher.main_process():
        return {}  # the figures, report and eval are the main process's
    last = results[stages[-1]]
    final = Path(last.final_model)
    summary = {"stages": {name: result.to_json() for name, result in results.items()}, "final_model": str(final),
               "final_adapter": last.model_dir if last.adapter else None,
               "provenance": environment.provenance(started)}
    if recipe.eval is not None:  # the last stage: the SFT and final models on the recipe's benchmarks
        summary["eval"] = eval_stage.run_eval_stage(recipe, results, force)
    Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(recipe.output_dir) / run_files.SUMMARY).write_text(json.dumps(summary, indent=2))
    report = write_report(recipe.output_dir)
    print(f"\nrun done: final model in {final}; figures in {Path(recipe.output_dir) / run_files.SUMMARY}")
    for name, result in results.items():
        print(f"  {name}: {result.headline()}")
    print(f"report: {report}")
    print(next_commands(recipe, final, summary["final_adapter"]))
    return summary


def next_commands(recipe: Recipe, final: Path, adapter: str | None = None) -> str:
    """What to do with a finished run, each command ready to paste (paths as this run wrote them)."""
    run = Path(recipe.output_dir)
    push = f"zephyr-train push {run}" + ("" if recipe.hub else " --repo-id YOUR_NAME/MODEL")
    lines = ["", "next:",
             f"  zephyr-train chat {final} --prompt \"What is DPO?\"    # talk to the final model",
             f"  zephyr-train report {run}                                # rewrite the report (also mid-run)",
             f"  {push}    # publish every stage with its card",
             f"  zephyr-train demo {run}                                  # SFT and final side by side in the browser",
             f"  zephyr-train export {run} --gguf {run}/model.gguf --quant q8_0    # for llama.cpp, LM Studio, Ollama",
             f"  zephyr-train eval {final} --bench mt-bench --out {run}/eval/mt-bench --judge-model gpt-4    "
             "# MT-Bench as FastChat scores it (needs OPENAI_API_KEY)",
             f"  python -c \"from transformers import pipeline; p = pipeline('text-generation', model='{final}'); "
             "print(p('Hello', max_new_tokens=20)[0]['generated_text'])\"    # load it anywhere"]
    if adapter:
        lines.append(f"  zephyr-train merge {adapter} --out {run}/export    # export: the adapter merged, any dtype")
    if recipe.model.name_or_path.startswith("builtin:"):
        lines.append(f"  (the built-in model {recipe.model.name_or_path} is a random-init test model: its answers "
                     "are gibberish by design)")
    return "\n".join(lines)
