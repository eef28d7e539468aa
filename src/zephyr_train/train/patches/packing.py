"""Packed rows that stay rows: block-diagonal attention without FlashAttention.

TRL's best-fit packing is padding-free: it flattens a whole batch into one sequence of
batch x max_length tokens, which FlashAttention's varlen kernels handle in linear memory. With SDPA
or eager attention (CPUs, GPUs without flash-attn) that one sequence gets a dense
(B*L)^2 mask: on this project's CPU a step took 4.3x longer than the same tokens as B rows of L.
This collator keeps each packed row a row and gives it position ids that restart at every example,
from which transformers builds a block-diagonal mask per row: no attention across examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
            pos = [i for n in (example.get("seq_lengths") or [len(ids)]) for i in range(n)]
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
