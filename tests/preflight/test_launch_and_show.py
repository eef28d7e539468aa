"""`check --show N`, the recipe's intended launch, the start-over flag's alias and `zephyr-train env`:
each through the real CLI (none of them loads torch for `check`) or the parser it uses."""

from __future__ import annotations

import pytest

from tests.conftest import cli
from zephyr_train.cli import build_parser


def test_check_show_prints_rendered_examples_with_trained_spans():
    done = cli("check", "recipes/smoke.yaml", "--show", "2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "examples: the text that carries loss is between [[ and ]]" in out
    assert out.count("=== sft example") == 2 and out.count("=== dpo example") == 2
    sft = out.split("=== sft example 1")[1].split("=== sft example 2")[0]
    assert "<|user|>\n" in sft and "[[" in sft
    trained = sft.split("[[", 1)[1].split("]]", 1)[0]
    assert "<|user|>" not in trained and trained.endswith("</s>")  # the reply and its EOS, never the prompt
    dpo = out.split("=== dpo example 1")[1]
    assert "--- chosen:" in dpo and "--- rejected:" in dpo
    assert "Traceback" not in done.stderr


def test_check_uses_the_recipes_launch_and_prints_exact_flags():
    done = cli("check", "recipes/zephyr-7b-beta/full.yaml", "--gpu", "h100")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the recipe's launch section (--accelerate-config configs/deepspeed_zero3.yaml, --gpus 8)" in done.stdout
    assert "launch: ZeRO-3 (configs/deepspeed_zero3.yaml), 8 GPU(s) x 80 GiB" in done.stdout
    assert ("launch it: accelerate launch --config_file configs/deepspeed_zero3.yaml --num_processes 8 -m "
            "zephyr_train run recipes/zephyr-7b-beta/full.yaml") in done.stdout
    small = cli("check", "recipes/zephyr-7b-beta/full.yaml", "--gpu", "a100-40", "--gpus", "2")
    assert small.returncode == 3  # does not fit; each setup that would is printed as flags to paste
    fits = [line for line in small.stdout.splitlines() if line.strip().startswith("zephyr-train check")]
    assert fits and all("--accelerate-config configs/" in line and "--gpus " in line for line in fits)
    bad = cli("check", "recipes/smoke.yaml", "launch.gpus=0")
    assert bad.returncode == 2 and "launch.gpus must be 1 or more" in bad.stderr


@pytest.mark.parametrize("command", ["sft", "dpo", "run"])
@pytest.mark.parametrize("flag", ["--overwrite", "--force"])
def test_start_over_flag_is_the_same_everywhere(command, flag):
    args = build_parser().parse_args([command, "recipes/smoke.yaml", flag])
    assert (args.force if command == "run" else args.overwrite) is True


def test_env_prints_versions_for_bug_reports():
    done = cli("env")
    assert done.returncode == 0, done.stderr
    for name in ("python:", "git commit:", "torch:", "transformers:", "trl:", "peft:", "accelerate:", "accelerator:"):
        assert name in done.stdout
    help_text = " ".join(cli("--help").stdout.split())  # argparse wraps the epilog
    assert "Start with: make smoke" in help_text and "bug reports:" in help_text
