"""`eval.rows`: an eval set of N rows carved from the training mixture, as `train_test_split` reads an int."""

from __future__ import annotations

import pytest

from tests.data.test_mixture import convo, stage, write_jsonl
from zephyr_train.data.mixture import load_mixture
from zephyr_train.errors import UserError
from zephyr_train.stages import load_recipe


def test_rows_carves_exactly_that_many(tmp_path):
    a = write_jsonl(tmp_path / "d" / "train.jsonl", [convo(i) for i in range(100)])
    st = stage(["sft.eval.split=null", "sft.eval.rows=7", "sft.eval.seed=3"], [{"path": str(a), "split": "train"}])
    out = load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)
    assert len(out["eval"]) == 7 and len(out["train"]) == 93
    assert not {m[0]["content"] for m in out["train"]["messages"]} & {m[0]["content"] for m in out["eval"]["messages"]}
    again = load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)
    assert again["eval"]["messages"] == out["eval"]["messages"]  # seeded


def test_rows_not_below_the_mixture(tmp_path):
    a = write_jsonl(tmp_path / "d" / "train.jsonl", [convo(i) for i in range(10)])
    st = stage(["sft.eval.split=null", "sft.eval.rows=10"], [{"path": str(a), "split": "train"}])
    with pytest.raises(UserError, match="eval.rows is 10 but the training mixture has only 10 rows"):
        load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)


@pytest.mark.parametrize("overrides, message", [
    (["sft.eval.split=null", "sft.eval.fraction=1000"], "for 1000 rows write sft.eval.rows: 1000"),
    (["sft.eval.split=null", "sft.eval.rows=0"], "sft.eval.rows is a row count to carve"),
    (["sft.eval.rows=5"], "exactly one of split"),
    (["sft.eval.split=null", "sft.eval.rows=2.5"], "sft.eval.rows"),
])
def test_bad_eval_settings(overrides, message):
    from tests.conftest import SMOKE

    with pytest.raises(UserError, match=message):
        load_recipe(SMOKE, overrides)
