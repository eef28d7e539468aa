"""Lean RMSNorm and SwiGLU: the same outputs and gradients as transformers' modules, with fewer kept activations."""

from __future__ import annotations

import copy

import pytest
import torch

from zephyr_train.train.patches import lean_layers
from zephyr_train.train.patches.contract import Setup


def tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    dims = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2}
    config, model = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (MistralConfig, MistralForCausalLM)
    return model(config(**dims))


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def kept_bytes(model, ids) -> int:
    """Bytes autograd keeps for the backward of one forward (each storage once)."""
    seen, total = set(), [0]

    def pack(t):
        if t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return total[0]


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_same_loss_and_gradients_with_fewer_kept_activations(kind):
    model = tiny(kind)
    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(1))
    lean = copy.deepcopy(model)
    assert lean_layers.install(lean) == 2 * 2 + 2 + 1  # two norms and an MLP per layer, the final norm
    expected, expected_grads = loss_and_grads(model, ids)
    got, grads = loss_and_grads(lean, ids)
    torch.testing.assert_close(got, expected)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    assert kept_bytes(lean, ids) < 0.8 * kept_bytes(model, ids)


def test_lora_layers_keep_their_forward_and_adapters_train_the_same():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj", "q_proj"], lora_dropout=0.0)
    model = get_peft_model(tiny("llama"), config)
    lean = copy.deepcopy(model)
    assert lean_layers.install(lean) == 2 * 2 + 1  # the norms only: the MLP's projections are LoRA layers
    ids = torch.randint(0, 300, (1, 32), generator=torch.Generator().manual_seed(2))
    for p in (*model.parameters(), *lean.parameters()):  # LoRA's B starts at 0: give the adapters a gradient path
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    lean.load_state_dict(model.state_dict())
    (expected, expected_grads), (got, grads) = loss_and_grads(model, ids), loss_and_grads(lean, ids)
    torch.testing.assert_close(got, expected)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_on_cpus_only():
    assert "Liger" in lean_layers.PATCH.unwanted(Setup(device="cuda"))
    assert lean_layers.PATCH.unwanted(Setup(device="cpu")) is None
    assert "CPUs" in lean_layers.PATCH.unwanted(Setup(device="mps"))


def test_under_cpu_autocast_the_backward_runs_in_the_forwards_precision():
    """bf16 mixed precision (accelerate's `mixed_precision: bf16` on a CPU): same loss, gradients within bf16."""
    model = tiny("llama")
    lean = copy.deepcopy(model)
    lean_layers.install(lean)
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(3))
    results = []
    for m in (model, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (expected, expected_grads), (got, grads) = results
    torch.testing.assert_close(got, expected)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name
        torch.testing.assert_close(grad, expected_grads[name], atol=2e-3, rtol=2e-2, msg=name)
