"""Bad input: one line naming the file/key and the fix, exit 2, no traceback, no model loaded.

`cli` runs the CLI's `main` in this process (tests/conftest.py); `test_a_real_process_keeps_the_house_rule` runs
`python -m zephyr_train` itself, for each way the CLI reports an error and for --help."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOKE, assert_user_error, cli, cli_process


def recipe_with(tmp_path, old: str, new: str):
    """The smoke recipe with one change, writing into tmp_path (never into a real run's directory)."""
    path = tmp_path / "bad.yaml"
    text = SMOKE.read_text().replace(old, new).replace("output_dir: runs/smoke", f"output_dir: {tmp_path / 'out'}")
    path.write_text(text)
    return str(path)


def test_missing_dataset_path(tmp_path):
    bad = recipe_with(tmp_path, "path: builtin:ultrachat-sample", "path: ./data/nowhere.jsonl")
    assert_user_error(cli("sft", bad), "bad.yaml: sft.datasets[0].path './data/nowhere.jsonl' does not exist")


def test_dataset_without_needed_column(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    for split in ("train_sft", "test_sft"):
        (data / f"{split}.jsonl").write_text(json.dumps({"conversations": [], "id": 1}) + "\n")
    bad = recipe_with(tmp_path, "path: builtin:ultrachat-sample", f"path: {data}")
    assert_user_error(cli("sft", bad), "sft.datasets[0]", "has no 'messages' column",
                      "map one with columns: {messages: <its column>}")


def test_unknown_template_name():
    assert_user_error(cli("sft", str(SMOKE), "chat_template=zephir"), "chat_template 'zephir'",
                      "did you mean 'zephyr'?")


def test_four_bit_without_lora():
    assert_user_error(cli("sft", str(SMOKE), "model.quantization.load_in_4bit=true"),
                      "smoke.yaml: model.quantization", "add a sft.lora section")


def test_model_path_that_does_not_exist():
    assert_user_error(cli("sft", str(SMOKE), "model.name_or_path=./models/missing"),
                      "model.name_or_path './models/missing' does not exist")


def test_hub_model_not_cached_offline():
    assert_user_error(cli("sft", str(SMOKE), "model.name_or_path=mistralai/Mistral-7B-v0.1"),
                      "not in the local Hub cache and HF_HUB_OFFLINE=1")


def test_wrong_type(tmp_path):
    bad = recipe_with(tmp_path, "learning_rate: 1.0e-3", "learning_rate: fast")
    assert_user_error(cli("sft", bad), "bad.yaml: sft.learning_rate expects float, got 'fast'")


def test_misspelt_key(tmp_path):
    bad = recipe_with(tmp_path, "per_device_train_batch_size", "per_device_train_bach_size")
    assert_user_error(cli("sft", bad), "unknown key 'sft.per_device_train_bach_size'",
                      "did you mean 'per_device_train_batch_size'?")


def test_missing_recipe_and_bad_override():
    assert_user_error(cli("sft", "recipes/nope.yaml"), "recipes/nope.yaml: recipe file not found")
    assert_user_error(cli("sft", str(SMOKE), "learning_rate"), "write overrides as key=value")


def test_nothing_usable_left(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    row = {"messages": [{"role": "user", "content": "hi"}]}  # no assistant turn
    (data / "train_sft.jsonl").write_text(json.dumps(row) + "\n")
    bad = recipe_with(tmp_path, "path: builtin:ultrachat-sample", f"path: {data}")
    run = cli("sft", bad, "sft.eval=null")
    assert_user_error(run, "no usable training conversations left", "no assistant turn")


def test_bad_data_never_costs_a_finished_run(tmp_path):
    """--overwrite with a broken recipe must fail before the old results are deleted."""
    out = tmp_path / "runs"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "model.safetensors").write_text("precious")
    bad = recipe_with(tmp_path, "path: builtin:ultrachat-sample", "path: ./nowhere.jsonl")
    assert_user_error(cli("sft", bad, f"output_dir={out}", "--overwrite"), "does not exist")
    assert (out / "sft" / "model.safetensors").read_text() == "precious"


@pytest.mark.parametrize("argv", [["--help"], ["sft", "--help"]])
def test_help(argv):
    run = cli(*argv)
    assert run.returncode == 0 and "zephyr-train" in run.stdout


def test_a_real_process_keeps_the_house_rule():
    """The exit code and streams of `python -m zephyr_train` itself: a recipe error (a UserError caught in main),
    an argparse error (SystemExit from the parser) and --help."""
    assert_user_error(cli_process("sft", str(SMOKE), "chat_template=zephir"), "did you mean 'zephyr'?")
    unknown = cli_process("sft", str(SMOKE), "--overwrit")
    assert unknown.returncode == 2 and "unrecognized arguments: --overwrit" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    helped = cli_process("--help")
    assert helped.returncode == 0 and "Start with: make smoke" in " ".join(helped.stdout.split())


def test_overrides_after_options_and_unknown_flags(tmp_path):
    bad = recipe_with(tmp_path, "learning_rate: 1.0e-3", "learning_rate: 1.0e-3")
    assert_user_error(cli("sft", bad, "--overwrite", "sft.learning_rate=fast"), "sft.learning_rate expects float")
    run = cli("sft", bad, "--overwrit")
    assert run.returncode == 2 and "unrecognized arguments: --overwrit" in run.stderr


def test_run_never_clears_a_directory_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "notes.txt").write_text("keep me")
    assert_user_error(cli("run", str(SMOKE), f"output_dir={out}"), "is not empty and was not made by zephyr-train")
    assert (out / "sft" / "notes.txt").read_text() == "keep me"


def test_preflight_runs_before_every_stage(tmp_path):
    """`run` checks the DPO stage before SFT starts; `sft` checks its rules before the model loads."""
    assert_user_error(cli("run", str(SMOKE), f"output_dir={tmp_path}", "dpo.beta=0"), "dpo.beta must be > 0")
    assert_user_error(cli("sft", str(SMOKE), f"output_dir={tmp_path}", "sft.eval=null", "sft.eval_strategy=steps"),
                      "sft.eval_strategy asks for evaluation but sft has no eval section")
    assert not any(tmp_path.iterdir())
