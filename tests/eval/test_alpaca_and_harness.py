"""AlpacaEval outputs in the format `alpaca_eval --model_outputs` reads, and lm-eval on a tiny local task
written here (lm-evaluation-harness runs for real, offline, on the tiny model)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli
from zephyr_train.errors import UserError
from zephyr_train.eval import alpaca_eval, harness
from zephyr_train.eval.questions import load_instructions


def test_alpaca_outputs_format_cache_and_the_command_to_judge(tmp_path, generator, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    prompts = tmp_path / "alpaca_eval.json"
    prompts.write_text(json.dumps([{"instruction": "Say hi.", "dataset": "helpful_base", "output": "ref"},
                                   {"instruction": "Name a color."}, {"instruction": "Count to three."}]))
    items = load_instructions(str(prompts), limit=2)
    path = alpaca_eval.generate_outputs(tiny_model_dir, tmp_path / "o", items, "tiny-dpo", 4, generator=generator)
    rows = json.loads(path.read_text())
    assert [set(r) for r in rows] == [{"instruction", "output", "generator", "dataset"}] * 2
    assert [r["instruction"] for r in rows] == ["Say hi.", "Name a color."]
    assert rows[0]["dataset"] == "helpful_base" and rows[1]["dataset"] == "custom"
    assert rows[0]["generator"] == "tiny-dpo"
    assert rows[0]["output"] != "ref"  # the model's own output, not the reference's

    class Refusing:
        backend = generator.backend

        def generate(self, requests, on_batch):
            raise AssertionError("everything is cached; nothing should be generated")

    assert json.loads(alpaca_eval.generate_outputs(tiny_model_dir, tmp_path / "o", items, "tiny-dpo", 4,
                                                   generator=Refusing()).read_text()) == rows
    result = alpaca_eval.judge(path, tmp_path / "o", None)
    assert result["judged"] is False and result["command"] == f"alpaca_eval --model_outputs {path}"
    assert "to judge: alpaca_eval --model_outputs" in alpaca_eval.headline(result)


def test_alpaca_prompts_in_the_wrong_shape(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"instruction": "ok"}) + "\n" + json.dumps({"prompt": "no"}) + "\n")
    with pytest.raises(UserError, match="p.jsonl line 2: field instruction"):
        load_instructions(str(bad))


def tiny_task(folder):
    """A 6-question two-choice task in lm-eval's YAML task format, reading a local JSONL file."""
    rows = [{"q": f"Is {i} an even number?", "choices": ["yes", "no"], "label": i % 2} for i in range(6)]
    (folder / "parity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tiny_parity.yaml").write_text(
        "task: tiny_parity\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'parity.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{q}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n")
    return folder


@pytest.mark.slow
def test_lm_eval_on_a_tiny_local_task(tmp_path, tiny_model_dir):
    tasks = tiny_task(tmp_path)
    run = cli("eval", str(tiny_model_dir), "--bench", "lm-eval", "--tasks", "tiny_parity", "--include-path",
              str(tasks), "--out", str(tmp_path / "o"), "--batch-size", "4")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    scores = summary["tasks"]["tiny_parity"]
    assert 0 <= scores["acc"] <= 1 and scores["num_fewshot"] is None
    assert f"tiny_parity acc {scores['acc']:.4f}" in run.stdout


def test_lm_eval_bad_include_path_before_the_model_loads(tmp_path):
    with pytest.raises(UserError, match="must be a folder"):
        harness.check_tasks(["x"], str(tmp_path / "missing"))


def test_leaderboard_shots_group_the_paper_tasks():
    assert harness.LEADERBOARD_SHOTS == {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0}
    assert harness.main_metric({"acc": 0.4, "acc_norm": 0.5}) == ("acc_norm", 0.5)
