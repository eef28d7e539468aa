"""Mixtures: sources, shares, eval sets that never leak into training, malformed rows dropped and counted."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOKE
from zephyr_train.data.mixture import clean_conversations, conversation_problem, load_mixture
from zephyr_train.errors import UserError
from zephyr_train.stages import load_recipe

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


def convo(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"a {i}"}],
            "extra": i}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage(overrides: list[str], datasets: list[dict] | None = None, tmp_path=None):
    recipe = load_recipe(SMOKE, overrides)
    if datasets is not None:
        from zephyr_train.config.recipe import DatasetSpec

        recipe.stage("sft").datasets = [DatasetSpec(**d) for d in datasets]
    return recipe.stage("sft")


def test_builtin_sample_with_official_eval_split():
    out = load_mixture(stage([]), "sft", "r.yaml", ["messages"], seed=0)
    assert len(out["train"]) == 2000 and len(out["eval"]) == 200
    assert out["train"].column_names == ["messages"]
    assert out["report"]["eval_overlap_removed"] == 0


def test_weights_and_two_sources(tmp_path):
    a = write_jsonl(tmp_path / "a" / "train.jsonl", [convo(i) for i in range(100)])
    write_jsonl(tmp_path / "b" / "train.jsonl", [convo(1000 + i) for i in range(40)])
    st = stage(["sft.eval=null"], [{"path": str(a), "split": "train", "weight": 0.25},
                                  {"path": str(tmp_path / "b"), "split": "train", "weight": 1.0}])
    out = load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)
    assert len(out["train"]) == 25 + 40
    assert [s["taken"] for s in out["report"]["sources"]] == [25, 40]
    again = load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)
    assert again["train"]["messages"] == out["train"]["messages"]  # seeded


def test_eval_fraction_carved_from_train_with_seed(tmp_path):
    a = write_jsonl(tmp_path / "d" / "train.jsonl", [convo(i) for i in range(100)])
    st = stage(["sft.eval.split=null", "sft.eval.fraction=0.1", "sft.eval.seed=3"],
               [{"path": str(a), "split": "train"}])
    out = load_mixture(st, "sft", "r.yaml", ["messages"], seed=0)
    assert len(out["train"]) == 90 and len(out["eval"]) == 10
    train_prompts = {m[0]["content"] for m in out["train"]["messages"]}
    assert not train_prompts & {m[0]["content"] for m in out["eval"]["messages"]}


def test_test_split_never_silently_trained(tmp_path):
    with pytest.raises(UserError, match="official test split"):
        load_mixture(stage(["sft.eval=null"], [{"path": "builtin:ultrachat-sample", "split": "test_sft"}]),
                     "sft", "r.yaml", ["messages"], seed=0)
    # rows of the eval split that were copied into train are removed and counted
    d = tmp_path / "leaky"
    write_jsonl(d / "train_sft.jsonl", [convo(i) for i in range(30)])
    write_jsonl(d / "test_sft.jsonl", [convo(i) for i in range(25, 35)])
    out = load_mixture(stage([], [{"path": str(d), "split": "train_sft"}]), "sft", "r.yaml", ["messages"], seed=0)
    assert out["report"]["eval_overlap_removed"] == 5 and len(out["train"]) == 25


def test_saved_dataset_dict_and_column_mapping(tmp_path):
    import datasets

    rows = [{"conversation": convo(i)["messages"]} for i in range(12)]
    dd = datasets.DatasetDict({"train_sft": datasets.Dataset.from_list(rows),
                               "test_sft": datasets.Dataset.from_list(rows[:2])})
    dd.save_to_disk(str(tmp_path / "saved"))
    spec = {"path": str(tmp_path / "saved"), "split": "train_sft", "columns": {"messages": "conversation"}}
    out = load_mixture(stage([], [spec]), "sft", "r.yaml", ["messages"], seed=0)
    assert len(out["eval"]) == 2 and len(out["train"]) == 10
    with pytest.raises(UserError, match=r"has no 'messages' column \(it has conversation\); map one with columns"):
        load_mixture(stage([], [{"path": str(tmp_path / "saved"), "split": "train_sft"}]), "sft", "r.yaml",
                     ["messages"], seed=0)


def test_missing_path_and_split(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_mixture(stage([], [{"path": str(tmp_path / "nope.jsonl"), "split": "train"}]), "sft", "r.yaml",
                     ["messages"], seed=0)
    write_jsonl(tmp_path / "d" / "train.jsonl", [convo(0)])
    with pytest.raises(UserError, match=r"no train_sft.jsonl/.json/.parquet in .* it has train"):
        load_mixture(stage(["sft.eval=null"], [{"path": str(tmp_path / "d"), "split": "train_sft"}]), "sft",
                     "r.yaml", ["messages"], seed=0)


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([U, A], None),
        ([{"role": "system", "content": "s"}, U, A], None),
        ([U, {"role": "bot", "content": "x"}], "unknown role"),
        ([U, {"role": "assistant", "content": "  "}], "empty content"),
        ([U, U, A], "turns do not alternate"),
        ([U], "no assistant turn"),
        ([A, U], "does not start with a user turn"),
        ([U, A, {"role": "system", "content": "s"}], "system turn not first"),
        ("text", "not a list of messages"),
    ],
)
def test_conversation_problems(messages, problem):
    assert conversation_problem(messages) == problem


def test_malformed_rows_dropped_and_counted():
    import datasets

    rows = [[U, A], [U, A, U], [U, {"role": "tool", "content": "x"}], [U, {"role": "assistant", "content": ""}],
            [U, U], [U]]
    ds, counts = clean_conversations(datasets.Dataset.from_dict({"messages": rows}))
    assert len(ds) == 2
    assert ds["messages"][1] == [U, A]  # trailing user turn trimmed
    assert counts == {"trailing user turn trimmed": 1, "unknown role": 1, "empty content": 1,
                      "turns do not alternate": 1, "no assistant turn": 1}
