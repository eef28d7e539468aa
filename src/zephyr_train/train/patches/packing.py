"""Packed rows that stay rows: block-diagonal attention without FlashAttention.

TRL's best-fit packing is padding-free: it flattens a whole batch into one sequence of
batch x max_length tokens, which FlashAttention's varlen kernels handle in linear memory. With SDPA
or eager attention (CPUs, GPUs without flash-attn) that one sequence gets a dense
(B*L)^2 mask: on this project's CPU a step took 4.3x longer than the same tokens as B rows of L.
This collator keeps each packed row a row and gives it position ids that restart at every example,
and each example is attended on its own (`segment_attention`: SDPA once per example, where
transformers would build a block-diagonal mask per row and compute the whole row's scores): no
attention across examples either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zephyr_train.train.patches import segment_attention
from zephyr_train.train.patches.contract import Patch, Setup, Unwanted, unwrapped

SEQ_LENGTHS = "seq_lengths"  # TRL's column of each packed row's example lengths: where positions restart
COLUMNS = ("input_ids", "labels", SEQ_LENGTHS)  # all this collator reads; TRL's collator reads the same


@dataclass
class PackedRowsCollator:
    pad_token_id: int
    positions: int = 0  # token positions handed to the model so far, padding included
    real_tokens: int = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        self.positions += width * len(examples)
        self.real_tokens += sum(len(e["input_ids"]) for e in examples)
        input_ids, labels, positions = [], [], []
        for example in examples:
            ids = list(example["input_ids"])
            row_labels = list(example.get("labels", ids))
            pos = [i for n in (example.get(SEQ_LENGTHS) or [len(ids)]) for i in range(n)]
            pad = width - len(ids)
            # padding forms a segment of its own (positions restart), so it never joins an example
            input_ids.append(ids + [self.pad_token_id] * pad)
            row_labels += [-100] * pad
            pos += list(range(pad))
            # the first token of each example would be predicted from the previous example's last one
            labels.append([-100 if p == 0 else label for p, label in zip(pos, row_labels, strict=True)])
            positions.append(pos)
        return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(positions)}


def uses_varlen_kernels(attn_implementation: str | None) -> bool:
    """FlashAttention takes TRL's flattened padding-free batches efficiently; nothing else does."""
    return bool(attn_implementation) and "flash" in attn_implementation


def _unwanted(setup: Setup) -> str | None:
    if uses_varlen_kernels(setup.attn_implementation):
        return f"{setup.attn_implementation} takes TRL's padding-free batches as they are"
    return None


def _install(trainer: Any, _: Setup) -> str | Unwanted | None:
    """Swap TRL's collator for ours once the prepared data shows the packed layout it was written for.
    Without `seq_lengths` this collator would read a packed row as one sequence (attention across examples),
    and a column it does not read would be a training signal dropped: both leave TRL's collator in place."""
    if not hasattr(trainer, "padding_free"):
        return "SFTTrainer.padding_free is gone"
    if not trainer.padding_free:
        return Unwanted("packing is off (sft.packing: false)")
    columns = trainer.train_dataset.column_names
    if SEQ_LENGTHS not in columns:
        return f"TRL's packed dataset has no {SEQ_LENGTHS} column (it has {', '.join(columns)})"
    unread = [c for c in columns if c not in COLUMNS]
    if unread:
        return f"TRL's packed dataset has columns this collator does not read: {', '.join(unread)}"
    trainer.data_collator = PackedRowsCollator(trainer.processing_class.pad_token_id)
    segment_attention.use(unwrapped(trainer.model))
    return None


PATCH = Patch(name="packing", does="packed rows kept as rows, each example attended on its own", needs=lambda _: (),
              unwanted=_unwanted, after_init=_install)
