"""The house rule for this issue's inputs, through the real CLI: one line, exit 2, nothing written, and
`check` never imports torch, transformers, TRL or PEFT for them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, SMOKE, assert_user_error, cli


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


def test_check_takes_the_new_inputs_without_heavy_imports():
    code = (
        "import sys\n"
        "from zephyr_train.cli import main\n"
        "try:\n"
        f"    main(['check', {str(SMOKE)!r}, 'chat_template=llama3', 'sft.lora.use_dora=true', 'dpo.loss_type=ipo',"
        " 'sft.report_to=tensorboard', 'model.name_or_path=Qwen/Qwen2.5-0.5B'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert "Qwen/Qwen2.5-0.5B: 494.0M parameters (shipped)" in run.stdout
