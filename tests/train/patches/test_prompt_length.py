"""`dpo.max_prompt_length` keeps the end of a long prompt and its leading BOS; short prompts are untouched."""

from __future__ import annotations

from datasets import Dataset

from zephyr_train.train.patches.prompt_length import cut_prompts


def test_cut_keeps_bos_and_the_prompt_end():
    ds = Dataset.from_dict({"prompt_ids": [[1, 10, 11, 12, 13, 14], [1, 20, 21], [30, 31, 32, 33]]})
    cut = cut_prompts(ds, limit=4, bos=1)["prompt_ids"]
    assert cut[0] == [1, 12, 13, 14]  # BOS, then the last 3 tokens: 4 in all
    assert cut[1] == [1, 20, 21]  # already short
    assert cut[2] == [30, 31, 32, 33]  # no BOS to keep, exactly at the limit


def test_cut_without_a_bos_token():
    ds = Dataset.from_dict({"prompt_ids": [[1, 2, 3, 4, 5]]})
    assert cut_prompts(ds, limit=2, bos=None)["prompt_ids"] == [[4, 5]]
