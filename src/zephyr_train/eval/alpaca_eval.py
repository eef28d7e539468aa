"""AlpacaEval: the model's outputs for the AlpacaEval instructions, in the JSON that
`alpaca_eval --model_outputs` reads (a list of {instruction, output, generator, dataset}), judged through
the `alpaca_eval` library when it is installed and a judge key is set, otherwise the file and the command
to run are printed. Outputs are cached per instruction (a re-run answers only what is missing)."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path
from typing import Any

from zephyr_train.eval import store
from zephyr_train.eval.generation import Generator, Request, pick_backend
from zephyr_train.eval.judge import KEY_ENV
from zephyr_train.run_files import SUMMARY

OUTPUTS = "model_outputs.json"
CACHE = "cache/outputs.jsonl"


def generate_outputs(model_dir: Path, out: Path, instructions: list[dict], model_id: str, max_new_tokens: int,
                     backend: str = "auto", batch_size: int = 8, seed: int = 42, overwrite: bool = False,
                     extra_settings: dict | None = None, generator: Any = None) -> Path:
    """OUT/model_outputs.json, one entry per instruction, greedy (AlpacaEval's reference settings)."""

    backend = generator.backend if generator is not None else pick_backend(backend)
    settings = {"model_dir": str(Path(model_dir).resolve()), "model_id": model_id, "backend": backend,
                "max_new_tokens": max_new_tokens, "seed": seed,
                "instructions": [i["instruction"] for i in instructions], **(extra_settings or {})}
    store.claim(out, settings, overwrite, "pass --overwrite to answer again, or another --out")
    cached = {r["index"]: r["output"] for r in store.read_cache(out / CACHE)}
    todo = [i for i in range(len(instructions)) if i not in cached]
    if todo:

        print(f"alpaca-eval: generating {len(todo)} outputs for {model_id} ({len(cached)} cached) with {backend}")
        generator = generator or Generator(model_dir, backend, batch_size, seed)

        def save(batch: list[tuple[Any, str]]) -> None:
            store.append_jsonl(out / CACHE, [{"index": i, "output": text} for i, text in batch])
            cached.update(dict(batch))

        generator.generate([Request(i, [{"role": "user", "content": instructions[i]["instruction"]}], 0.0,
                                    max_new_tokens) for i in todo], save)
    rows = [{"instruction": item["instruction"], "output": cached[i], "generator": model_id,
             "dataset": item["dataset"]} for i, item in enumerate(instructions)]
    store.write_json(out / OUTPUTS, rows)
    return out / OUTPUTS


def command(outputs: Path, annotator: str | None) -> str:
    return "alpaca_eval --model_outputs " + shlex.quote(str(outputs)) + (
        f" --annotators_config {shlex.quote(annotator)}" if annotator else "")


def judge(outputs: Path, out: Path, annotator: str | None) -> dict:
    """Win rate through `alpaca_eval` when it is installed and OPENAI_API_KEY is set; else what to run."""
    result: dict[str, Any] = {"bench": "alpaca-eval", "outputs_file": str(outputs), "command": command(outputs,
                                                                                                      annotator)}
    if importlib.util.find_spec("alpaca_eval") is None or not os.environ.get(KEY_ENV):
        why = "alpaca_eval is not installed" if importlib.util.find_spec("alpaca_eval") is None else \
            f"{KEY_ENV} is not set"
        return {**result, "judged": False, "not_judged_because": why}
    from alpaca_eval import evaluate

    kwargs = {"annotators_config": annotator} if annotator else {}
    leaderboard, _ = evaluate(model_outputs=str(outputs), output_path=str(out / "alpaca_eval"),
                              is_return_instead_of_print=True, **kwargs)
    row = leaderboard.iloc[0].to_dict() if len(leaderboard) else {}
    return {**result, "judged": True, "win_rate": row.get("win_rate"),
            "length_controlled_win_rate": row.get("length_controlled_winrate"), "n": row.get("n_total")}


def run(model_dir: Path, out: Path, instructions: list[dict], model_id: str, max_new_tokens: int,
        backend: str = "auto", batch_size: int = 8, seed: int = 42, overwrite: bool = False,
        annotator: str | None = None) -> dict:
    """Outputs, then the win rate when it can be had; OUT/summary.json is written and returned."""
    outputs = generate_outputs(model_dir, out, instructions, model_id, max_new_tokens, backend, batch_size, seed,
                               overwrite)
    summary = {**judge(outputs, out, annotator), "model_id": model_id}
    store.write_json(out / SUMMARY, summary)
    return summary


def headline(summary: dict) -> str:
    if summary.get("judged"):
        return f"AlpacaEval win rate {summary.get('win_rate')}"
    return (f"AlpacaEval outputs in {summary['outputs_file']}, not judged ({summary.get('not_judged_because')}); "
            f"to judge: {summary['command']}")
