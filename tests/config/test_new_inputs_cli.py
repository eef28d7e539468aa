"""The house rule for this issue's inputs, through the real CLI: one line, exit 2, nothing written, and
`check` never imports torch, transformers, TRL or PEFT for them (tests/preflight/test_check.py)."""

from __future__ import annotations

import pytest

from tests.conftest import SMOKE, assert_user_error, cli


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("dpo.loss_type=[foo]", "dpo.loss_type has 'foo'; each item must be one of sigmoid"),
        ("sft.lora.use_dora=maybe", "sft.lora.use_dora expects bool"),
        ("chat_template=chatml", "TRL ships no plain ChatML template"),
    ],
)
def test_bad_inputs_stop_sft_with_one_line_and_nothing_written(override, fragment, tmp_path):
    out = tmp_path / "run"
    assert_user_error(cli("sft", str(SMOKE), override, f"output_dir={out}"), fragment)
    assert not out.exists()
