"""Standard benchmarks through lm-evaluation-harness (`lm_eval`), run on a model directory.

The Zephyr paper reports the Open LLM Leaderboard (v1) numbers: ARC-Challenge 25-shot, HellaSwag
10-shot, MMLU 5-shot, TruthfulQA (mc2) 0-shot. Without `num_fewshot` each of those tasks runs with its
leaderboard shots (tasks grouped by shot count, one harness call per group); any other task with its
own default. Local tasks (a folder of task YAMLs) come in through `include_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr_train.errors import UserError
from zephyr_train.eval import store
from zephyr_train.run_files import ADAPTER_CONFIG, SUMMARY

LEADERBOARD_SHOTS = {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0}


def check_tasks(tasks: list[str], include_path: str | None) -> Any:
    """The harness's TaskManager for these tasks; an unknown name is an error before the model loads.
    Only local tasks: the built-in index (thousands of YAML files, ~10 s to scan) is not read."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--bench lm-eval needs lm-evaluation-harness: pip install 'zephyr-train[eval]'") from None
    if include_path and not Path(include_path).is_dir():
        raise UserError(f"{include_path}: --include-path must be a folder of lm-eval task YAML files")
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--tasks: lm-eval knows no task {', '.join(unknown)}; `lm_eval ls tasks` lists them"
                        + (f" (local tasks from {include_path} included)" if include_path else ""))
    return manager


def run(model_dir: Path, out: Path, tasks: list[str], include_path: str | None = None,
        num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 8) -> dict:
    import lm_eval
    import torch

    manager = check_tasks(tasks, include_path)
    groups: dict[int | None, list[str]] = {}
    for task in tasks:
        groups.setdefault(num_fewshot if num_fewshot is not None else LEADERBOARD_SHOTS.get(task), []).append(task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_args = {"pretrained": str(model_dir), "dtype": "auto"}
    adapter = Path(model_dir) / ADAPTER_CONFIG
    if adapter.exists():  # a LoRA adapter: the harness loads its base, then the adapter through PEFT
        import json

        model_args.update(pretrained=json.loads(adapter.read_text())["base_model_name_or_path"], peft=str(model_dir))
    scores: dict[str, dict[str, Any]] = {}
    for shots, names in groups.items():
        print(f"lm-eval: {', '.join(names)} ({'default' if shots is None else shots}-shot) on {model_dir}")
        result = lm_eval.simple_evaluate(model="hf", model_args=model_args,
                                         tasks=names, num_fewshot=shots, limit=limit, batch_size=batch_size,
                                         device=device, task_manager=manager, log_samples=False)
        for task, metrics in (result or {}).get("results", {}).items():
            scores[task] = {"num_fewshot": shots,
                            **{k.split(",")[0]: v for k, v in metrics.items()
                               if isinstance(v, int | float) and "stderr" not in k and k != "sample_len"}}
    summary = {"bench": "lm-eval", "model_dir": str(model_dir), "tasks": scores, "limit": limit}
    store.write_json(out / SUMMARY, summary)
    return summary


def main_metric(metrics: dict) -> tuple[str, float] | None:
    for key in ("acc_norm", "acc", "mc2", "exact_match"):
        if key in metrics:
            return key, metrics[key]
    return None


def headline(summary: dict) -> str:
    parts = []
    for task, metrics in summary["tasks"].items():
        found = main_metric(metrics)
        if found:
            parts.append(f"{task} {found[0]} {found[1]:.4f}")
    return "lm-eval: " + (", ".join(parts) or "no scores")
