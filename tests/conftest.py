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


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from zephyr_train import builtin

    return builtin.model_dir("builtin:tiny-mistral")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
