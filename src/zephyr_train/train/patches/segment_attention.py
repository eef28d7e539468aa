"""Packed rows attended example by example: each segment's own causal SDPA, no row-wide mask.

With SDPA, transformers turns the restarting position ids of a packed row into a block-diagonal
(L x L) mask and computes attention over the whole row, every cross-example score included, then
masks it away. On SmolLM2-135M (packed rows of 1024 holding 3-4 conversations, this 2-core CPU) that
attention was 29% of an SFT step; SDPA called once per segment with `is_causal=True` (no mask, its
flash kernel) took the step from 12.5 s to 10.7 s.

The segments come from the position ids, as transformers reads them:
  - a position 0 starts an example (a "root");
  - a position q > 0 that does not follow its left neighbour starts a *branch* that continues the
    current root's first q tokens: its queries see those q keys, then their own causally. DPO's pair
    packing lays a pair out as prompt + chosen + rejected, the rejected answer a branch of the prompt,
    so the prompt is computed once per pair, not twice (`pair_packing`).
A sliding window (Mistral's) is kept by an explicit mask on the segments it reaches.

Only calls without a padding mask take this path (training forwards of packed rows): any call with a
2D attention mask (padded batches, generation) and any call with a KV cache goes to transformers' own
`sdpa_attention_forward` with the mask transformers built, so generation and eval are unchanged.
"""

from __future__ import annotations

from typing import Any

NAME = "zephyr_segments"  # the attention implementation's name in transformers' registries
_SWITCHABLE = "sdpa"  # only models on SDPA are switched: eager models (soft-capping) and FlashAttention keep theirs


def segments(position_ids: list[int]) -> list[tuple[int, int, int, int]]:
    """(start, end, root, prefix_length) per segment of one row: a root has prefix_length 0 and itself as root; a
    branch sees the first `prefix_length` tokens of segment number `root`."""
    starts = [i for i, pos in enumerate(position_ids) if i == 0 or pos != position_ids[i - 1] + 1]
    found: list[tuple[int, int, int, int]] = []
    root, root_length = 0, 0
    for start, end in zip(starts, [*starts[1:], len(position_ids)], strict=True):
        prefix = position_ids[start]
        if prefix == 0 or start == 0:  # a row that starts mid-sequence is attended causally, as it is
            root, root_length = len(found), (end - start if prefix == 0 else 0)
            found.append((start, end, root, 0))
        elif prefix > root_length:
            raise ValueError(f"packed row: position {prefix} at index {start} continues a prefix longer than "
                             f"the {root_length} tokens of the example before it")
        else:
            found.append((start, end, root, prefix))
    return found


_last: tuple[Any, list] = (None, [])  # the position ids of the forward in progress, and their segments per row


def _row_segments(position_ids: Any, rows: int) -> list[list[tuple[int, int, int, int]]]:
    """Segments of every row, computed once per forward (every layer gets the same position-id tensor)."""
    global _last
    if _last[0] is not position_ids:
        _last = (position_ids, [segments(row) for row in position_ids.expand(rows, -1).tolist()])
    return _last[1]


def _window_mask(q_positions: Any, k_positions: Any, window: int | None) -> Any:
    allowed = k_positions[None, :] <= q_positions[:, None]
    if window:
        allowed &= q_positions[:, None] - k_positions[None, :] < window
    return allowed


def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
              scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function interface: query [B, H, L, D], key/value [B, KV, L, D] -> [B, L, H, D]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    length = query.shape[2]
    if (attention_mask is not None or position_ids is None or key.shape[2] != length or length == 1
            or kwargs.get("is_causal") is False or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    window = kwargs.get("sliding_window")
    gqa = query.shape[1] != key.shape[1]
    rows = []
    # unbind/split, not slicing: a slice's backward writes into a zeroed tensor as large as the whole row, once
    # per segment (1.3 s of a 27 s DPO step on SmolLM2); split's backward is one concatenation
    for q_row, k_row, v_row, row in zip(query.unbind(0), key.unbind(0), value.unbind(0),
                                        _row_segments(position_ids, query.shape[0]), strict=True):
        sizes = [end - start for start, end, _, _ in row]
        qs, ks, vs = (t.split(sizes, dim=1) for t in (q_row, k_row, v_row))
        parts = []
        for i, (start, end, root, prefix) in enumerate(row):
            k, v, mask = ks[i], vs[i], None
            if prefix:  # the root's first `prefix` keys, then the branch's own
                k, v = torch.cat([ks[root][:, :prefix], k], dim=1), torch.cat([vs[root][:, :prefix], v], dim=1)
            if prefix or (window and end - start > window):
                steps = torch.arange(prefix + end - start, device=query.device)
                mask = _window_mask(steps[prefix:], steps, window)
            parts.append(torch.nn.functional.scaled_dot_product_attention(
                qs[i][None], k[None], v[None], attn_mask=mask, is_causal=mask is None, dropout_p=dropout,
                scale=scaling, enable_gqa=gqa))
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def mask(**kwargs: Any) -> Any:
    """transformers' mask interface: no mask when there is no padding mask and nothing cached before the queries
    (the attention reads the position ids and the sliding window, `local_size` here), else exactly SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    if (kwargs.get("attention_mask") is None and not kwargs.get("q_offset") and not kwargs.get("kv_offset")
            and kwargs.get("q_length") == kwargs.get("kv_length")):
        return None
    return sdpa_mask(**kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, mask)


def use(model: Any) -> bool:
    """Switch a model on SDPA whose decoder layers hand their position ids to the attention function (what
    transformers' FlashAttention packing relies on too) to segment attention; False when it stays as it is."""
    import inspect

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in (_SWITCHABLE, NAME):
        return False
    if config is not config.get_text_config() or getattr(config, "attention_chunk_size", None):
        return False  # vision-language models and chunked attention (Llama 4): their masks are not only causal
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not layers or "position_ids" not in inspect.signature(type(layers[0]).forward).parameters:
        return False
    _register()
    model.set_attn_implementation(NAME)
    return True


def in_use(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME
