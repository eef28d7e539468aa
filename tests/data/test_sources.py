"""One rule says what is a Hub repo id, for datasets, curation sources, models and model cards alike."""

from __future__ import annotations

import pytest

from zephyr_train.data.sources import is_hub_id


@pytest.mark.parametrize("name", ["HuggingFaceH4/ultrachat_200k", "mistralai/Mistral-7B-v0.1", "gpt2",
                                  "org/model.v1"])
def test_hub_ids(name):
    assert is_hub_id(name)


@pytest.mark.parametrize("name", ["", None, "./data", "/abs/path", "~/models/x", "a/b/c", "data/train.jsonl",
                                  "prefs.parquet", "builtin:tiny-mistral", "has space/x"])
def test_not_hub_ids(name):
    assert not is_hub_id(name)


def test_an_existing_local_directory_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/model")
