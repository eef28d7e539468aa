"""One full fine-tuning run made stage by stage, as a user makes it, shared by the SFT and DPO stage tests
(which only read it): `zephyr-train dpo` before any SFT, `zephyr-train sft` in its own process launched with a bf16
accelerate setting (read when the process starts), then `zephyr-train dpo` from its result (short rows for DPO:
what is checked is that each stage learns, not how fast)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.conftest import cli, cli_process

# the recipe's batches of 8, 256 tokens long: 40 steps at 3e-3 take the loss down by a quarter (2 or 4 rows of 128
# tokens a step do not), and the DPO stage learns from that model
SFT_FAST = ["sft.logging_steps=2", "sft.eval.max_samples=16", "sft.max_length=256"]


@pytest.fixture(scope="session")
def sft_then_dpo(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("stages") / "run"
    missing = cli("dpo", "recipes/smoke.yaml", f"output_dir={out}")  # no SFT result yet
    sft = cli_process("sft", "recipes/smoke.yaml", "sft.max_steps=40", "sft.learning_rate=3e-3", f"output_dir={out}",
                      *SFT_FAST, env={"ACCELERATE_MIXED_PRECISION": "bf16"})
    assert sft.returncode == 0, sft.stderr[-3000:]
    dpo = cli("dpo", "recipes/smoke.yaml", "dpo.max_steps=12", "dpo.logging_steps=1", "dpo.eval.max_samples=48",
              "dpo.max_length=128", f"output_dir={out}")
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    return SimpleNamespace(out=out, missing=missing, sft=sft, dpo=dpo)
