"""The `eval:` stage of `zephyr-train run`: after the training stages (here two finished ones, each the tiny
model, so no training time is spent), the SFT and final models are evaluated side by side; a re-run skips
what is done; the results reach OUTPUT_DIR/summary.json, the report (table + chart) and the model card.
The judge is the loopback server of judge_server.py (the remote judge API cannot exist here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMOKE, assert_user_error, cli
from tests.eval.judge_server import JudgeServer
from tests.eval.test_mt_bench import SECRET, rating_by_question
from zephyr_train import run_files
from zephyr_train.config.recipe import fingerprint, save_resolved
from zephyr_train.stages import build_recipe, read_result


def finished_run(tmp_path: Path, tiny_model_dir: Path, eval_section: dict):
    """A run folder whose sft and dpo stages are finished (fingerprint + summary), each holding the tiny model."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "run")
    raw["eval"] = eval_section
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = build_recipe(raw, str(path))
    for kind in ("sft", "dpo"):
        out = recipe.stage_dir(kind)
        shutil.copytree(tiny_model_dir, out)
        (out / run_files.FINGERPRINT).write_text(json.dumps(fingerprint(recipe, kind)))
        save_resolved(recipe, out)
        (out / run_files.LOG_HISTORY).write_text(json.dumps([{"step": 1, "loss": 8.0}, {"step": 3, "loss": 4.0}]))
        (out / run_files.SUMMARY).write_text(json.dumps({"model_dir": str(out), "train_loss_first": 8.0,
                                                          "train_loss_last": 4.0, "global_step": 3}))
    return recipe, path


@pytest.mark.slow
def test_run_evaluates_sft_and_final_model_then_skips(tmp_path, tiny_model_dir, eval_inputs, monkeypatch, capsys):
    """`run_pipeline` in this process (the CLI's `run` is this call after the recipe checks)."""
    from zephyr_train.pipeline.run import run_pipeline

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(rating_by_question) as server:
        section = {"benches": ["mt-bench"], "backend": "transformers", "batch_size": 4,
                   "judge": {"model": "judge-x", "base_url": server.url},
                   "mt_bench": {"questions": str(eval_inputs["questions"]), "max_new_tokens": 4, "limit": 2,
                                "judge_prompts": str(eval_inputs["prompts"])}}
        recipe, path = finished_run(tmp_path, tiny_model_dir, section)
        run_pipeline(recipe)
        first = capsys.readouterr().out
        assert len(server.requests) == 2 * 2 * 2  # 2 models x 2 questions x 2 turns
        assert "eval: mt-bench on sft, dpo" in first
        assert "dpo: MT-Bench, partial: 2 of 8 questions (judge: judge-x at 127.0.0.1:" in first
        run_pipeline(recipe)
        again = capsys.readouterr().out
        assert len(server.requests) == 8 and "generating" not in again
    assert again.count("done under the same settings") == 2
    run_dir = Path(recipe.output_dir)
    summary = json.loads((run_dir / run_files.SUMMARY).read_text())
    models = summary["eval"]["models"]
    assert set(models) == {"sft", "dpo"} and models["dpo"]["mt-bench"]["score"] == 7.0  # writing, roleplay: 8/6
    label = f"MT-Bench, partial: 2 of 8 questions (judge: judge-x at {models['dpo']['mt-bench']['judge_endpoint']})"
    report = (run_dir / run_files.REPORT).read_text()
    assert "<h2>Evaluation</h2>" in report and f"<td>{label}</td>" in report
    assert "<th>Zephyr-7B paper (judge: GPT-4)</th>" in report and "final model (SFT + DPO): 7.00" in report
    assert (run_dir / run_files.REPORT_FILES / "eval_mt_bench_categories.png").stat().st_size > 1000
    for file in run_dir.rglob("*"):
        assert not file.is_file() or file.suffix in (".safetensors", ".png") or SECRET not in file.read_text()
    assert SECRET not in first + again

    from zephyr_train.publish.model_card import make_card

    card = str(make_card(recipe, "dpo", "me/zephyr-tiny", "model", None, "builtin:tiny-mistral",
                         read_result(run_dir / "dpo", "dpo")))
    assert f"| {label} | 7.000 |" in card and "| MT-Bench roleplay | 7.000 |" in card


def test_run_without_a_judge_key_stops_before_training(tmp_path, tiny_model_dir, eval_inputs):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "run")
    raw["eval"] = {"mt_bench": {"questions": str(eval_inputs["questions"])}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert_user_error(cli("run", str(path), env={"OPENAI_API_KEY": ""}), "eval.judge.base_url", "OPENAI_API_KEY")
    assert not (tmp_path / "run").exists()


def test_a_done_mt_bench_with_failed_verdicts_is_redone_only_when_asked(tmp_path):
    from zephyr_train.eval.stage import _complete

    (tmp_path / run_files.SUMMARY).write_text(json.dumps({"judged": True, "verdicts": 160, "expected_verdicts": 160,
                                                          "failed": 2}))
    assert _complete(tmp_path) and not _complete(tmp_path, retry_failed=True)
