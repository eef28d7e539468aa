"""The DPO stage: preference pairs checked, start from the SFT result, first loss ln 2, held-out figures."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import cli
from zephyr_train.data.mixture import clean_preferences, preference_problem

U = {"role": "user", "content": "What is the capital of France?"}
GOOD = {"role": "assistant", "content": "Paris."}
BAD = {"role": "assistant", "content": "As an AI, I cannot say."}


def pair(chosen, rejected, prompt="What is the capital of France?"):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (pair([U, GOOD], [U, BAD]), None),
        (pair([GOOD], [BAD]), None),  # prompt only in its own column
        (pair([U, GOOD], [U, GOOD]), "identical chosen and rejected"),
        (pair([U, GOOD], [U, {"role": "assistant", "content": " "}]), "empty answer"),
        (pair([U, GOOD], [{"role": "user", "content": "Other?"}, BAD]), "chosen and rejected follow different prompts"),
        (pair([U, GOOD], [U, BAD], prompt="Something else"), "chosen and rejected follow different prompts"),
        (pair([U, GOOD], [U]), "last message is not the assistant's answer"),
        (pair([GOOD], [BAD], prompt=""), "no prompt"),
    ],
)
def test_preference_problems(row, problem):
    assert preference_problem(row) == problem


def test_pairs_split_into_prompt_chosen_rejected():
    import datasets

    rows = [pair([U, GOOD], [U, BAD]), pair([GOOD], [BAD]), pair([U, GOOD], [U, GOOD])]
    ds, counts = clean_preferences(datasets.Dataset.from_list(rows))
    assert counts == {"identical chosen and rejected": 1}
    assert ds[0] == {"prompt": [U], "chosen": [GOOD], "rejected": [BAD]}
    assert ds[1]["prompt"] == [U]


@pytest.mark.slow
def test_dpo_after_sft_starts_at_ln2_and_learns(sft_then_dpo):
    """`zephyr-train dpo` from the SFT result of tests/stages/conftest.py: 12 steps, 48 held-out pairs."""
    missing = sft_then_dpo.missing
    assert missing.returncode == 2 and "holds no finished SFT run" in missing.stderr
    assert "Traceback" not in missing.stderr
    s = json.loads((sft_then_dpo.out / "dpo" / "summary.json").read_text())
    assert s["train_loss_first"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 0
    assert s["held_out_before"]["margin"] == pytest.approx(0.0, abs=1e-4)
    assert s["held_out_before"]["accuracy"] == pytest.approx(0.5, abs=0.05)  # ties count half
    assert s["held_out_before"]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert s["held_out_after"]["margin"] > 0 and s["held_out_after"]["accuracy"] > 0.5
    assert s["train_loss_last"] < s["train_loss_first"]
    assert "held-out preference accuracy" in sft_then_dpo.dpo.stdout
    # the tiny model is on SDPA: each pair's prompt is computed once, and all the patches applied
    out = sft_then_dpo.dpo.stdout + sft_then_dpo.dpo.stderr
    assert "DPO log-probs: packed pairs, each prompt once, completion positions only, dense LM head" in out
    assert s["patches"]["dpo_log_probs"] == s["patches"]["lean_layers"] == "applied"


def test_dpo_bad_input_is_one_line(tmp_path):
    from tests.conftest import assert_user_error

    data = tmp_path / "prefs"
    data.mkdir()
    rows = [pair([U, GOOD], [U, GOOD]), pair([U, GOOD], [U, {"role": "assistant", "content": ""}])]
    (data / "train_prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    from tests.conftest import SMOKE

    body = SMOKE.read_text().replace("path: builtin:ultrafeedback-sample", f"path: {data}")
    body = body.replace("output_dir: runs/smoke", f"output_dir: {tmp_path / 'out'}")
    recipe.write_text(body.split("\nsft:")[0] + "\ndpo:" + body.split("\ndpo:")[1])  # DPO-only recipe
    assert_user_error(cli("dpo", str(recipe), "dpo.eval=null"), "no usable preference pairs left",
                      "identical chosen and rejected", "empty answer")
    assert_user_error(cli("dpo", str(recipe), "dpo.beta=0"), "dpo.beta must be > 0")
    (data / "train_prefs.jsonl").write_text(json.dumps({"prompt": "p", "chosen": [GOOD]}) + "\n")
    assert_user_error(cli("dpo", str(recipe), "dpo.eval=null"), "has no 'rejected' column")
