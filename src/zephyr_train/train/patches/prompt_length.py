"""`dpo.max_prompt_length`: the public Zephyr DPO recipe caps prompts at 512 of 1024 tokens.

TRL 1.16's DPOConfig dropped the field and cuts a whole pair to `max_length` from its end, so a long
prompt leaves the answers (what DPO compares) little or no room. We cut the prompt itself, keeping its
end, as TRL tokenizes the pairs: inside `DPOTrainer.__init__`, so reference log-probs that TRL precomputes
there (`precompute_ref_log_probs`) are computed on the cut prompts the training sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def cut_prompts(ds: Any, limit: int, bos: int | None) -> Any:
    """Keep each prompt's last `limit` tokens (and its leading BOS): the question's end and the template's
    `<|assistant|>` stay, so a long context never crowds the answers out of `max_length`."""
    def cut(ids: list[int]) -> dict:
        if len(ids) <= limit:
            return {"prompt_ids": ids}
        head = ids[:1] if bos is not None and ids[:1] == [bos] else []
        return {"prompt_ids": head + ids[len(ids) - limit + len(head):]}

    return ds.map(cut, input_columns="prompt_ids", desc="Cutting prompts to max_prompt_length")


@contextlib.contextmanager
def cutting(limit: int | None, bos: int | None) -> Iterator[None]:
    """While a `DPOTrainer` is built, every dataset it tokenizes has its prompts cut (nothing when `limit` is None)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    original = DPOTrainer._prepare_dataset

    def prepare(self: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        return cut_prompts(original(self, dataset, *args, **kwargs), limit, bos)

    if limit:
        DPOTrainer._prepare_dataset = prepare
    try:
        yield
    finally:
        DPOTrainer._prepare_dataset = original
