"""Shared set-up: offline, one cache for the built-in tiny model, helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.yaml"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("ZEPHYR_TRAIN_CACHE", str(Path(tempfile.gettempdir()) / "zephyr-train-test-cache"))
os.environ.pop("ACCELERATE_MIXED_PRECISION", None)


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m zephyr_train ARGS` the way a user would, capturing its output."""
    return subprocess.run([sys.executable, "-m", "zephyr_train", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def assert_user_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    """The house rule for bad input: exit 2, one `zephyr-train: error:` line, no traceback, no model loaded."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("zephyr-train: error:")]
    assert len(lines) == 1, run.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Loading weights" not in run.stdout + run.stderr  # found before any model is loaded


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from zephyr_train.data import builtin

    return builtin.model_dir("builtin:tiny-mistral")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
