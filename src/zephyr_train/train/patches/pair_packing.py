"""Chosen and rejected answers of several pairs packed into rows, no padding, each prompt computed once.

TRL's `DataCollatorForPreference` stacks every chosen and rejected sequence of a batch and pads them all
to the longest: with UltraFeedback's long-tailed lengths (batch 8, max_length 1024) about half of the
positions the model computes are padding. Here the padded batch is re-laid, inside the model's forward,
into packed rows, best-fit decreasing. Where segment attention is on (`segment_attention`), a pair is
laid out as prompt + chosen, then the rejected answer as a branch of that prompt (its position ids
continue from the prompt's length), so the prompt's tokens are computed once per pair instead of twice:
chosen and rejected share them exactly, token for token, or the pair is laid out as two sequences.
Otherwise each sequence's position ids start at 0 and transformers' block-diagonal mask keeps them apart.
`index` maps every (sequence, position) of the padded layout to its place in the packed rows (the
rejected answer's prompt positions to the shared prompt), so per-token results land back where TRL's
loss reads them, and the collator, the loss and the metrics stay TRL's.
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


@dataclass(frozen=True)
class Unit:
    """What one packed segment holds: (sequence, first position laid out) per part; a branch skips the prompt."""

    parts: tuple[tuple[int, int], ...]
    length: int


@dataclass
class PackedPairs:
    input_ids: Any  # [rows, width]
    position_ids: Any  # [rows, width], restarting at every sequence (and at the padding that ends a row)
    index: Any  # [sequences, length]: flat position in rows*width of each token of the padded layout (0 on padding)
    real_tokens: int  # tokens the model computes that are not padding (a shared prompt counts once)
    positions: int  # rows * width: what the model computes
    shared_prompts: int = 0  # pairs laid out as prompt + chosen + rejected


def units(input_ids: Any, lengths: list[int], prompt_lengths: list[int] | None) -> list[Unit]:
    """Chosen i and rejected i (`[chosen..., rejected...]`) as one unit when their prompts are the same tokens
    and both have an answer left after them (`prompt_lengths` given); every other sequence on its own."""
    import torch

    half = len(lengths) // 2
    if prompt_lengths is None or len(lengths) % 2:
        return [Unit(((s, 0),), lengths[s]) for s in range(len(lengths))]
    found = []
    for c, r in zip(range(half), range(half, 2 * half), strict=True):
        p = prompt_lengths[c]
        if 0 < p == prompt_lengths[r] and p < min(lengths[c], lengths[r]) \
                and torch.equal(input_ids[c, :p], input_ids[r, :p]):
            found.append(Unit(((c, 0), (r, p)), lengths[c] + lengths[r] - p))
        else:
            found += [Unit(((c, 0),), lengths[c]), Unit(((r, 0),), lengths[r])]
    return found


def prompt_lengths(labels: Any) -> list[int]:
    """Tokens before each sequence's first label (TRL labels completions only): its prompt."""
    return (labels != -100).int().argmax(dim=1).tolist()


def pack(input_ids: Any, attention_mask: Any, pad_token_id: int = 0, prompts: list[int] | None = None) -> PackedPairs:
    """Re-lay a right-padded batch ([chosen..., rejected...] x length) as packed rows; `prompts` (each sequence's
    prompt length) shares each pair's prompt between its two answers."""
    import torch

    lengths = attention_mask.sum(dim=1).tolist()
    laid = units(input_ids, lengths, prompts)
    width = max(max(u.length for u in laid), 1)
    rows = best_fit([u.length for u in laid], width)
    ids = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
    index = torch.zeros(input_ids.shape, dtype=torch.long, device=input_ids.device)
    steps = torch.arange(max(input_ids.size(1), width), device=input_ids.device)
    for r, members in enumerate(rows):
        offset = 0
        for unit in (laid[u] for u in members):
            for s, skip in unit.parts:
                n = lengths[s] - skip
                ids[r, offset:offset + n] = input_ids[s, skip:lengths[s]]
                positions[r, offset:offset + n] = steps[skip:lengths[s]]
                index[s, skip:lengths[s]] = r * width + offset + steps[:n]
                if skip:  # the branch's prompt is its unit's first sequence's
                    index[s, :skip] = index[unit.parts[0][0], :skip]
                offset += n
        positions[r, offset:] = steps[:width - offset]  # the row's padding is a segment of its own
    return PackedPairs(ids, positions, index, sum(u.length for u in laid), len(rows) * width,
                       sum(len(u.parts) == 2 for u in laid))
