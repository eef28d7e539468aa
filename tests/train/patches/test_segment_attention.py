"""Segment attention is exact: packed rows (roots and prompt-sharing branches) give what each sequence gives alone,
with its gradients; calls with a padding mask or a cache are transformers' SDPA unchanged."""

from __future__ import annotations

import pytest
import torch

from zephyr_train.train.patches import segment_attention


def test_segments_read_roots_branches_and_padding():
    # prompt(3) + chosen(2), rejected(2) as a branch of the prompt, then an example of 2, then padding of 1
    row = [0, 1, 2, 3, 4, 3, 4, 0, 1, 0]
    assert segment_attention.segments(row) == [(0, 5, 0, 0), (5, 7, 0, 3), (7, 9, 2, 0), (9, 10, 3, 0)]
    # a branch of the second example sees that example's prefix, by its segment number
    assert segment_attention.segments([0, 1, 0, 1, 2, 1, 2]) == [(0, 2, 0, 0), (2, 5, 1, 0), (5, 7, 1, 1)]
    assert segment_attention.segments(list(range(6))) == [(0, 6, 0, 0)]
    assert segment_attention.segments([4, 5, 6]) == [(0, 3, 0, 0)]  # starts mid-sequence: causal as it is
    with pytest.raises(ValueError, match="position 4 at index 3"):
        segment_attention.segments([0, 1, 2, 4, 5])  # a branch longer than its root's tokens


def tiny(kind: str):
    """A tiny random model with GQA: Llama (no window), or Mistral with a sliding window of 4 tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    dims = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "attn_implementation": "sdpa"}
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**dims)).eval()
    return MistralForCausalLM(MistralConfig(**dims, sliding_window=4)).eval()


def hidden(model, ids, **kwargs):
    return model.model(input_ids=ids, use_cache=False, **kwargs).last_hidden_state


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_packed_roots_and_branches_equal_each_sequence_alone(kind):
    model = tiny(kind)
    assert segment_attention.use(model) and segment_attention.in_use(model)
    g = torch.Generator().manual_seed(1)
    prompt, chosen, rejected, other = (torch.randint(0, 300, (n,), generator=g) for n in (5, 4, 3, 6))
    ids = torch.cat([prompt, chosen, rejected, other, torch.tensor([0, 0])])[None]
    positions = torch.cat([torch.arange(9), torch.arange(5, 8), torch.arange(6), torch.arange(2)])[None]
    packed = hidden(model, ids, position_ids=positions)[0]
    packed[:18].sum().backward()  # not the padding
    grads = [p.grad.clone() for p in model.model.parameters()]
    model.zero_grad()
    alone = [hidden(model, torch.cat(parts)[None])[0] for parts in ((prompt, chosen), (prompt, rejected), (other,))]
    torch.testing.assert_close(packed[:9], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[9:12], alone[1][5:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[12:18], alone[2], atol=1e-5, rtol=1e-5)
    (alone[0].sum() + alone[1][5:].sum() + alone[2].sum()).backward()
    for got, expected in zip(grads, (p.grad for p in model.model.parameters()), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_sliding_window_is_kept():
    """Mistral's window of 4: a segment of 9 tokens attends as transformers' windowed SDPA does, not fully."""
    model = tiny("mistral")
    ids = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(2))
    expected = hidden(model, ids)
    segment_attention.use(model)
    torch.testing.assert_close(hidden(model, ids, position_ids=torch.arange(9)[None]), expected,
                               atol=1e-5, rtol=1e-5)
    model.config.sliding_window = None
    assert not torch.allclose(hidden(model, ids, position_ids=torch.arange(9)[None])[0, 5:], expected[0, 5:],
                              atol=1e-3)


def test_padding_masks_and_generation_are_sdpa_unchanged():
    model = tiny("llama")
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                   pad_token_id=0)
        segment_attention.use(model)
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected)
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                          pad_token_id=0), generated)


def test_only_sdpa_models_are_switched():
    from transformers import LlamaConfig, LlamaForCausalLM

    eager = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, attn_implementation="eager"))
    assert not segment_attention.use(eager)
    assert eager.config._attn_implementation == "eager"


def test_saved_config_does_not_name_it(tmp_path):
    model = tiny("llama")
    segment_attention.use(model)
    model.save_pretrained(tmp_path)
    assert segment_attention.NAME not in (tmp_path / "config.json").read_text()
