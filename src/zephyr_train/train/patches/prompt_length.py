"""`dpo.max_prompt_length`: the public Zephyr DPO recipe caps prompts at 512 of 1024 tokens.

TRL 1.16's DPOConfig dropped the field and cuts a whole pair to `max_length` from its end, so a long
prompt leaves the answers (what DPO compares) little or no room. We cut the prompt itself, keeping its
end, after TRL has tokenized the pairs.
"""

from __future__ import annotations

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


def cut_trainer_prompts(trainer: Any, limit: int, bos: int | None) -> None:
    trainer.train_dataset = cut_prompts(trainer.train_dataset, limit, bos)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = cut_prompts(trainer.eval_dataset, limit, bos)
