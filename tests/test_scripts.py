"""scripts/: the handbook-style entry points are the CLI's commands, errors and all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, SMOKE, assert_user_error


@pytest.mark.parametrize("command,stage", [("sft", "sft"), ("dpo", "dpo"), ("run", "dpo")])
def test_script_is_the_command(command, stage):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{command}.py"), str(SMOKE), f"{stage}.bogus=1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert_user_error(run, "unknown key", "bogus")
