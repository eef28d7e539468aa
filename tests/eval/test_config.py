"""The recipe's `eval:` section: parsed and checked with the rest of the recipe, before torch loads."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import SMOKE, assert_user_error, cli
from zephyr_train.config.evaluation import PAPER_TASKS
from zephyr_train.config.recipe import to_dict
from zephyr_train.errors import UserError
from zephyr_train.stages import build_recipe, load_recipe


def smoke_with(eval_section) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["eval"] = eval_section
    return raw


def test_defaults_and_round_trip_through_the_resolved_recipe():
    recipe = build_recipe(smoke_with({"benches": ["mt-bench", "lm-eval"], "judge": {"model": "gpt-4o"},
                                      "mt_bench": {"limit": 3}, "lm_eval": {"tasks": "arc_challenge,hellaswag"}}),
                          "r.yaml")
    spec = recipe.eval
    assert spec.judge.model == "gpt-4o" and spec.judge.base_url is None and spec.mt_bench.limit == 3
    assert spec.lm_eval.tasks == ["arc_challenge", "hellaswag"] and spec.mt_bench.max_new_tokens == 1024
    again = build_recipe(to_dict(recipe), "resolved.yaml")
    assert again.eval == spec
    assert build_recipe(smoke_with(None), "r.yaml").eval.lm_eval.tasks == list(PAPER_TASKS)
    assert build_recipe(yaml.safe_load(SMOKE.read_text()), "r.yaml").eval is None


@pytest.mark.parametrize("section, fragment", [
    ({"benches": ["mt_bench"]}, "did you mean 'mt-bench'"),
    ({"judge": {"api_key": "sk-x"}}, "eval.judge.api_key: keys never go in a recipe"),
    ({"mt_bench": {"max_new_token": 5}}, "unknown key 'eval.mt_bench.max_new_token'; did you mean 'max_new_tokens'"),
    ({"models": ["rlhf"]}, "eval.models names 'rlhf'"),
    ({"backend": "tgi"}, "eval.backend must be one of"),
    ({"mt_bench": {"limit": "ten"}}, "eval.mt_bench.limit expects int"),
    ({"batch_size": 0}, "at least 1"),
])
def test_bad_eval_sections_are_one_line_errors(section, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        build_recipe(smoke_with(section), "r.yaml")


def test_override_and_cli_error(tmp_path):
    recipe = load_recipe(SMOKE, ["eval.benches=[alpaca-eval]", "eval.alpaca_eval.limit=2"])
    assert recipe.eval.benches == ["alpaca-eval"] and recipe.eval.alpaca_eval.limit == 2
    assert_user_error(cli("check", str(SMOKE), "eval.judge.modle=x"), "eval.judge.modle", "'model'")
