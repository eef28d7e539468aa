"""Chosen and rejected answers of several pairs packed into rows, no padding, no cross-talk.

TRL's `DataCollatorForPreference` stacks every chosen and rejected sequence of a batch and pads them all
to the longest: with UltraFeedback's long-tailed lengths (batch 8, max_length 1024) about half of the
positions the model computes are padding. Here the padded batch is re-laid, inside the model's forward,
into rows as wide as its longest sequence, best-fit decreasing, each sequence's position ids starting
at 0; transformers turns restarting position ids into a block-diagonal mask (as for SFT's
`PackedRowsCollator`), so a sequence attends only to itself. `index` maps every (sequence, position)
of the padded layout to its place in the packed rows, so per-token results land back where TRL's loss
reads them, and the collator, the loss and the metrics stay TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def best_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Sequence indices per row: longest first, each into the fullest row it still fits (best-fit decreasing)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [r for r in range(len(rows)) if room[r] >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: room[r])
            rows[r].append(i)
            room[r] -= lengths[i]
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


@dataclass
class PackedPairs:
    input_ids: Any  # [rows, width]
    position_ids: Any  # [rows, width], restarting at every sequence (and at the padding that ends a row)
    index: Any  # [sequences, length]: flat position in rows*width of each token of the padded layout (0 on padding)
    real_tokens: int
    positions: int  # rows * width: what the model computes


def pack(input_ids: Any, attention_mask: Any, pad_token_id: int = 0) -> PackedPairs:
    """Re-lay a right-padded batch ([chosen..., rejected...] x length) as packed rows."""
    import torch

    lengths = attention_mask.sum(dim=1).tolist()
    width = max(max(lengths), 1)
    rows = best_fit(lengths, width)
    ids = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
    index = torch.zeros(input_ids.shape, dtype=torch.long, device=input_ids.device)
    steps = torch.arange(input_ids.size(1), device=input_ids.device)
    for r, members in enumerate(rows):
        offset = 0
        for s in members:
            n = lengths[s]
            ids[r, offset:offset + n] = input_ids[s, :n]
            positions[r, offset:offset + n] = steps[:n]
            index[s, :n] = r * width + offset + steps[:n]
            offset += n
        positions[r, offset:] = steps[:width - offset]  # the row's padding is a segment of its own
    return PackedPairs(ids, positions, index, int(sum(lengths)), len(rows) * width)
