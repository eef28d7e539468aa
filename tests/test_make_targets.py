"""Every Zephyr-7B-beta recipe has Makefile targets that resolve to a valid check and accelerate launch."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from zephyr_train.cli import main

RECIPES = sorted(p.stem for p in (ROOT / "recipes" / "zephyr-7b-beta").glob("*.yaml"))
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(*args: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines() if "zephyr" in line]


@pytest.mark.parametrize("stage", ["run", "sft", "dpo"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_target_resolves_to_check_and_launch(recipe, stage, capsys):
    target = f"zephyr-7b-beta-{recipe}" + ("" if stage == "run" else f"-{stage}")
    check, launch = dry_run(target)[-2:]
    assert launch[0].endswith("accelerate") and launch[1] == "launch"
    config = launch[launch.index("--config_file") + 1]
    assert (ROOT / config).is_file()
    module = launch.index("-m")
    assert launch[module + 1: module + 4] == ["zephyr_train", stage, f"recipes/zephyr-7b-beta/{recipe}.yaml"]
    assert check[0].endswith("zephyr-train") and check[1] == "check"
    assert main(check[1:]) == 0, capsys.readouterr().out  # the check the target runs passes


def test_variables_pass_through():
    check, launch = dry_run("zephyr-7b-beta-full-sft", "GPUS=4", "ACCELERATE_CONFIG=configs/fsdp.yaml",
                            "OVERRIDES=sft.learning_rate=1e-5", "GPU_MEMORY=80")[-2:]
    assert launch[launch.index("--config_file") + 1] == "configs/fsdp.yaml"
    assert launch[launch.index("--num_processes") + 1] == "4" and launch[-1] == "sft.learning_rate=1e-5"
    assert check[check.index("--gpus") + 1] == "4" and check[check.index("--gpu-memory") + 1] == "80"
    qlora = dry_run("zephyr-7b-beta-qlora", "GPUS=2", "LOCAL_DATA=1")[-1]
    assert "configs/multi_gpu.yaml" in qlora and "sft.datasets.0.path=data/ultrachat" in qlora


def test_make_data_builds_both_datasets():
    lines = dry_run("data")
    assert [line[1:3] for line in lines[-2:]] == [["data", "ultrachat"], ["data", "ultrafeedback"]]
