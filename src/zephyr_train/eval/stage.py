"""The run's last stage: a recipe's `eval:` section evaluates the SFT model and the final model after
DPO on the same benchmarks, side by side (the paper's ablation: SFT alone 6.64 MT-Bench, SFT then DPO
7.00). Each (model, bench) lives in OUTPUT_DIR/eval/<stage>/<bench>/ with a fingerprint of the settings
and of the training stage it evaluates; a finished one under the same fingerprint is skipped without
loading a model, a changed one redone. The judge's key and every input file are checked by `preflight`
before training starts, so a missing key costs seconds, not a training run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe, fingerprint
from zephyr_train.eval import alpaca_eval, harness, mt_bench, store
from zephyr_train.eval import questions as q
from zephyr_train.eval.harness import check_tasks
from zephyr_train.eval.judge import JudgeSettings, check_configured
from zephyr_train.run_files import EVAL, SUMMARY
from zephyr_train.train.results import StageResult

FINGERPRINT = "eval_fingerprint.json"


def _judge_settings(recipe: Recipe) -> Any:

    spec = recipe.eval
    if spec.mt_bench.answers_only:
        return None
    return JudgeSettings(spec.judge.model, spec.judge.base_url, spec.judge.parallel, spec.judge.retries)


def mt_bench_inputs(recipe: Recipe) -> q.MtBenchInputs:
    m = recipe.eval.mt_bench
    return q.load_mt_bench(m.questions, m.limit, m.judge_prompts, m.reference_answers,
                           _judge_settings(recipe) is not None)


def preflight(recipe: Recipe) -> None:
    """Every eval input and the judge's key or endpoint, before any model loads or trains."""
    spec = recipe.eval
    if spec is None:
        return

    if "mt-bench" in spec.benches:
        judge = _judge_settings(recipe)
        if judge is not None:

            check_configured(judge, "eval.judge.base_url")
        mt_bench_inputs(recipe)
    if "alpaca-eval" in spec.benches:
        q.load_instructions(spec.alpaca_eval.prompts, spec.alpaca_eval.limit)
    if "lm-eval" in spec.benches:

        check_tasks(spec.lm_eval.tasks, spec.lm_eval.include_path)


def model_of(result: StageResult) -> Path:
    """The model a stage hands on: the merged model of a LoRA stage, else its output."""
    return Path(result.final_model)


def bench_fingerprint(recipe: Recipe, kind: str, bench: str) -> str:
    spec = dataclasses.asdict(recipe.eval)
    section = {"mt-bench": "mt_bench", "alpaca-eval": "alpaca_eval", "lm-eval": "lm_eval"}[bench]
    settings = {"bench": spec[section], "backend": spec["backend"], "seed": spec["seed"],
                "judge": spec["judge"]["model"] if bench != "lm-eval" else None,
                "stage": fingerprint(recipe, kind)["digest"]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_bench(recipe: Recipe, kind: str, bench: str, model_dir: Path, folder: Path, redo: bool) -> dict:

    spec, model_id = recipe.eval, f"{Path(recipe.output_dir).name}-{kind}"
    resume = f"zephyr-train run {recipe.source}"
    if bench == "mt-bench":

        given = mt_bench_inputs(recipe)
        job = mt_bench.MtBenchJob(model_dir, folder, given.questions, model_id, spec.mt_bench.max_new_tokens,
                                  _judge_settings(recipe), given.prompts, given.references, spec.backend,
                                  spec.batch_size, spec.seed, resume_command=resume,
                                  question_set_size=given.set_size, retry_failed=spec.judge.retry_failed)
        summary = mt_bench.run(job, overwrite=redo)
        print(f"  {kind}: {mt_bench.headline(summary)}")
        return summary
    if bench == "alpaca-eval":

        a = spec.alpaca_eval
        summary = alpaca_eval.run(model_dir, folder, q.load_instructions(a.prompts, a.limit), model_id,
                                  a.max_new_tokens, spec.backend, spec.batch_size, spec.seed, redo, a.annotator)
        print(f"  {kind}: {alpaca_eval.headline(summary)}")
        return summary

    h = spec.lm_eval
    summary = harness.run(model_dir, folder, h.tasks, h.include_path, h.num_fewshot, h.limit, spec.batch_size)
    print(f"  {kind}: {harness.headline(summary)}")
    return summary


def run_eval_stage(recipe: Recipe, results: dict[str, StageResult | None], force: bool = False) -> dict:
    """Evaluate each trained stage's model on every bench; returns {"models": {stage: {bench: summary}}}
    and writes it to OUTPUT_DIR/eval/summary.json."""
    spec = recipe.eval
    root = Path(recipe.output_dir) / EVAL
    kinds = [k for k in (spec.models or list(results)) if results.get(k)]
    print(f"\neval: {', '.join(spec.benches)} on {', '.join(kinds)}")
    found: dict[str, dict] = {}
    for kind in kinds:
        for bench in spec.benches:
            folder = root / kind / bench
            digest = bench_fingerprint(recipe, kind, bench)
            recorded = folder / FINGERPRINT
            same = recorded.exists() and json.loads(recorded.read_text()).get("digest") == digest
            if same and (folder / SUMMARY).exists() and not force and _complete(folder, spec.judge.retry_failed):
                print(f"  {kind}: {bench} done under the same settings in {folder}; skipped")
                found.setdefault(kind, {})[bench] = json.loads((folder / SUMMARY).read_text())
                continue
            redo = force or (recorded.exists() and not same)
            if redo and folder.exists():
                import shutil

                shutil.rmtree(folder)
            store.write_json(recorded, {"digest": digest})
            found.setdefault(kind, {})[bench] = run_bench(recipe, kind, bench, model_of(results[kind]), folder, False)
    summary = {"models": found, "benches": list(spec.benches)}
    store.write_json(root / SUMMARY, summary)
    return summary


def _complete(folder: Path, retry_failed: bool = False) -> bool:
    """A judged MT-Bench summary with verdicts missing (an earlier failure) is not done, nor one with -1
    verdicts when `eval.judge.retry_failed` asks for them again."""
    summary = json.loads((folder / SUMMARY).read_text())
    if retry_failed and summary.get("failed"):
        return False
    return not summary.get("judged") or summary.get("verdicts") == summary.get("expected_verdicts", 0)


def load(run_dir: str | Path) -> dict | None:
    """The eval stage's results for a run folder, if it has any."""
    path = Path(run_dir) / EVAL / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
