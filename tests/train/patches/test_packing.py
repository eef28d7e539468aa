"""Packing is exact: a packed batch gives the same per-token losses as each example run alone.

use_cache=False as in training: with a cache, transformers does not read packing from position ids.
"""

from __future__ import annotations

import torch

from zephyr_train.train.patches.packing import PackedRowsCollator


def per_token_nll(model, input_ids, labels, **kwargs):
    logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll, targets != -100


def test_packed_batch_equals_examples_one_by_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    g = torch.Generator().manual_seed(0)
    lengths = [[7, 12, 5], [20], [3, 9]]  # three packed rows of different widths
    examples, singles = [], []
    for row in lengths:
        seqs = [torch.randint(3, 4000, (n,), generator=g).tolist() for n in row]
        singles.extend(seqs)
        flat = [t for s in seqs for t in s]
        examples.append({"input_ids": flat, "labels": flat, "seq_lengths": row})
    batch = PackedRowsCollator(pad_token_id=2)(examples)
    assert batch["input_ids"].shape == (3, 24)
    with torch.no_grad():
        packed, mask = per_token_nll(model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
        packed_losses = packed[mask]
        alone = []
        for seq in singles:
            ids = torch.tensor([seq])
            nll, m = per_token_nll(model, ids, ids)
            alone.append(nll[m])
    alone = torch.cat(alone)
    # every example token except each example's first is trained, padding never is
    assert mask.sum().item() == sum(len(s) - 1 for s in singles)
    torch.testing.assert_close(packed_losses, alone, rtol=1e-4, atol=1e-4)


def test_attention_does_not_cross_examples(tiny_model_dir):
    """Changing the first example must not change the second's logits in the same row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    collate = PackedRowsCollator(pad_token_id=2)
    a = collate([{"input_ids": [5, 6, 7, 8, 9, 10], "seq_lengths": [3, 3]}])
    b = collate([{"input_ids": [50, 60, 70, 8, 9, 10], "seq_lengths": [3, 3]}])
    with torch.no_grad():
        la = model(input_ids=a["input_ids"], position_ids=a["position_ids"], use_cache=False).logits
        lb = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    torch.testing.assert_close(la[0, 3:], lb[0, 3:])
    assert not torch.allclose(la[0, :3], lb[0, :3])
