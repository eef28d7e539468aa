"""RMSNorm and the SwiGLU MLP keeping only what their backward needs: CPU stand-ins for Liger's kernels.

Without gradient checkpointing, autograd keeps every intermediate of a layer until the backward. For
Llama-family layers much of that is cheap to recompute: the SwiGLU MLP keeps its gate and up projections,
SiLU(gate) and their product (4 x intermediate floats per token); RMSNorm keeps its input and its normalized
output. Liger-kernel's fused Triton RMSNorm and SwiGLU keep less, on CUDA only (`use_liger_kernel`).
These two autograd functions do the same in torch: the MLP keeps gate and up and recomputes SiLU and the
product in the backward (elementwise work); RMSNorm keeps its input and one inverse RMS per token. On
SmolLM2-135M (30 layers, hidden 576, MLP 1536) that is 2 x 1536 + 2 x 576 fewer floats per token and layer
(~37% of the layer's kept activations), with the same outputs and gradients (tests/train/patches/
test_lean_layers.py).

Installed on modules whose forward is exactly transformers' Llama-family one (the class names below), in
full precision, bf16 or under CPU autocast (the backward runs in the forward's autocast state), and for the
MLP only where its three projections are plain bias-free `nn.Linear` (LoRA and 4-bit layers keep their own
forward); on CPUs only: not on CUDA/XPU, where Liger's kernels do it better, nor under DeepSpeed (ZeRO-3
gathers weights around module calls, not inside an autograd function's backward). Measured on SmolLM2-135M:
kept activations 2982 -> 1987 MB for 2048 tokens, a step ~2% slower.
"""

from __future__ import annotations

import types
from typing import Any

from zephyr_train.train.patches.contract import Need, Patch, Setup, Unwanted, attribute, unwrapped

# transformers' modules that compute exactly weight * x / rms(x) and down(silu(gate(x)) * up(x))
NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
MLPS = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")


def _functions() -> tuple[Any, Any]:
    import torch
    from torch.nn import functional as F  # noqa: N812

    # the backward runs under the forward's autocast state (bf16 mixed precision on a CPU), as autograd's would
    forward_amp, backward_amp = torch.amp.custom_fwd(device_type="cpu"), torch.amp.custom_bwd(device_type="cpu")

    class RMSNorm(torch.autograd.Function):
        @staticmethod
        @forward_amp
        def forward(ctx: Any, x: Any, weight: Any, eps: float) -> Any:
            rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
            ctx.save_for_backward(x, weight, rstd)
            return weight * (x.float() * rstd).to(x.dtype)

        @staticmethod
        @backward_amp
        def backward(ctx: Any, grad: Any) -> tuple:
            x, weight, rstd = ctx.saved_tensors
            normed = x.float() * rstd
            grad_weight = None
            if ctx.needs_input_grad[1]:
                grad_weight = (grad * normed.to(x.dtype)).reshape(-1, grad.shape[-1]).sum(0)
            grad_normed = (grad * weight).float()
            grad_x = rstd * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
            return grad_x.to(x.dtype), grad_weight, None

    class SwiGLU(torch.autograd.Function):
        @staticmethod
        @forward_amp
        def forward(ctx: Any, x: Any, w_gate: Any, w_up: Any, w_down: Any) -> Any:
            gate, up = F.linear(x, w_gate), F.linear(x, w_up)
            ctx.save_for_backward(x, gate, up, w_gate, w_up, w_down)
            return F.linear(F.silu(gate) * up, w_down)

        @staticmethod
        @backward_amp
        def backward(ctx: Any, grad: Any) -> tuple:
            x, gate, up, w_gate, w_up, w_down = ctx.saved_tensors
            # under autocast the forward's matmuls ran in the autocast dtype: the backward's do too
            w_gate, w_up, w_down = (w.to(gate.dtype) for w in (w_gate, w_up, w_down))
            x, grad = x.to(gate.dtype), grad.to(gate.dtype)
            sigmoid = torch.sigmoid(gate)
            silu = gate * sigmoid
            grad_act = grad @ w_down
            grad_up = grad_act * silu
            grad_gate = grad_act * up * sigmoid * (1 + gate * (1 - sigmoid))
            del grad_act, sigmoid
            flat_x = x.reshape(-1, x.shape[-1])
            grads = [None] * 4
            if ctx.needs_input_grad[0]:
                grads[0] = grad_gate @ w_gate + grad_up @ w_up
            if ctx.needs_input_grad[1]:
                grads[1] = grad_gate.reshape(-1, grad_gate.shape[-1]).T @ flat_x
            if ctx.needs_input_grad[2]:
                grads[2] = grad_up.reshape(-1, grad_up.shape[-1]).T @ flat_x
            if ctx.needs_input_grad[3]:
                grads[3] = grad.reshape(-1, grad.shape[-1]).T @ (silu * up).reshape(-1, up.shape[-1])
            return tuple(grads)

    return RMSNorm, SwiGLU


def _plain_linear(module: Any) -> bool:
    import torch

    return type(module) is torch.nn.Linear and module.bias is None


def install(model: Any) -> int:
    """Swap the forward of every matching RMSNorm and MLP module of `model`; how many were swapped."""
    rms_norm, swiglu = _functions()

    def norm_forward(self: Any, hidden_states: Any) -> Any:
        return rms_norm.apply(hidden_states, self.weight, self.variance_epsilon)

    def mlp_forward(self: Any, x: Any) -> Any:
        return swiglu.apply(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)

    swapped = 0
    for module in model.modules():
        name = type(module).__name__
        if name in NORMS and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(norm_forward, module)
        elif name in MLPS and all(_plain_linear(getattr(module, p, None)) for p in ("gate_proj", "up_proj",
                                                                                     "down_proj")) \
                and type(getattr(module, "act_fn", None)).__name__ == "SiLUActivation":
            module.forward = types.MethodType(mlp_forward, module)
        else:
            continue
        swapped += 1
    return swapped


def _unwanted(setup: Setup) -> str | None:
    if setup.device in ("cuda", "xpu"):
        return f"on {setup.device} Liger's kernels do this (use_liger_kernel)"
    return None if setup.device == "cpu" else f"written for CPUs, not {setup.device}"


def _install(trainer: Any, _: Setup) -> str | Unwanted | None:
    if getattr(trainer, "is_deepspeed_enabled", False):
        return Unwanted("DeepSpeed gathers weights around module calls")
    if not install(unwrapped(trainer.model)):
        return Unwanted(f"no {' / '.join(NORMS[:1] + MLPS[:1])}-shaped module in this model")
    return None


def _needs(_: Setup) -> tuple[Need, ...]:
    """The classes matched by name, as transformers names them (a rename would leave the patch finding nothing)."""
    return (attribute("transformers.activations.SiLUActivation"),
            attribute("transformers.models.llama.modeling_llama.LlamaRMSNorm"),
            attribute("transformers.models.llama.modeling_llama.LlamaMLP"))


PATCH = Patch(name="lean_layers", does="RMSNorm and SwiGLU keeping only what their backward needs",
              needs=_needs, unwanted=_unwanted, after_init=_install)
