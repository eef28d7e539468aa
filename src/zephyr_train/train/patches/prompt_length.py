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

from zephyr_train.errors import UserError
from zephyr_train.train.patches.contract import Patch, parameters

PROMPT_IDS = "prompt_ids"  # the column TRL's DPO tokenization writes the prompt to
TESTED = "install trl 1.16, the version this release is tested with"


def cut_prompts(ds: Any, limit: int, bos: int | None) -> Any:
    """Keep each prompt's last `limit` tokens (and its leading BOS): the question's end and the template's
    `<|assistant|>` stay, so a long context never crowds the answers out of `max_length`."""
    if PROMPT_IDS not in ds.column_names:
        raise UserError(f"patch prompt_length (dpo.max_prompt_length) found no {PROMPT_IDS} column in TRL's "
                        f"tokenized pairs (it has {', '.join(ds.column_names)}); remove dpo.max_prompt_length, "
                        f"or {TESTED}")

    def cut(ids: list[int]) -> dict:
        if len(ids) <= limit:
            return {PROMPT_IDS: ids}
        head = ids[:1] if bos is not None and ids[:1] == [bos] else []
        return {PROMPT_IDS: head + ids[len(ids) - limit + len(head):]}

    return ds.map(cut, input_columns=PROMPT_IDS, desc="Cutting prompts to max_prompt_length")


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


PATCH = Patch(
    name="prompt_length", does="dpo.max_prompt_length: prompts cut to their last N tokens",
    needs=lambda _: (parameters("trl.trainer.dpo_trainer.DPOTrainer._prepare_dataset", ("self", "dataset")),),
    on_mismatch="error", fix=f"remove dpo.max_prompt_length, or {TESTED}",
    unwanted=lambda setup: None if setup.max_prompt_length else "no dpo.max_prompt_length",
    during_init=lambda setup: cutting(setup.max_prompt_length, setup.bos_token_id),
    when_off=lambda setup: "prompts are not cut to dpo.max_prompt_length; TRL cuts each pair's end at max_length"
    if setup.max_prompt_length else None)
