"""The dense LM head returns what TRL's fused head returns, computed from the full logits, at labelled
positions only (prompt and padding positions get zeros and a False mask)."""

from __future__ import annotations

import torch

from zephyr_train.train.patches import lm_head


def test_dense_head_matches_full_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100  # a prompt
    labels[1, 9:] = -100  # padding
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    lm_head.use_dense_lm_head(model)
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)

    targets, mask = labels[:, 1:], labels[:, 1:] != -100
    full = torch.log_softmax(logits, dim=-1)
    expected = full.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    assert torch.equal(out.label_mask, mask)
    torch.testing.assert_close(out.log_probs, expected, atol=1e-5, rtol=1e-5)
    entropy = -(full.exp() * full).sum(-1) * mask
    torch.testing.assert_close(out.entropy, entropy, atol=1e-4, rtol=1e-4)
    assert torch.equal(out.is_top1, (logits.argmax(-1) == targets) & mask)
    torch.testing.assert_close(out.loss, -expected.sum() / mask.sum())


def test_dense_head_only_where_triton_is_missing():
    assert lm_head.needs_dense_head("cpu")
    assert lm_head.needs_dense_head(torch.device("cpu"))
    assert not lm_head.needs_dense_head(torch.device("cuda", 0))
