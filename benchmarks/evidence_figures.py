"""The arithmetic of the GPU evidence: model FLOPs per token, the peak they are measured against, the table.

Model FLOPs utilization (MFU) counts the FLOPs the model needs per trained token, never what the run really
executes: activation-checkpointing recomputation and padding are not counted (PaLM's definition, arXiv
2204.02311 appendix B). Per token, with N the parameters that take part in matmuls (every projection plus the
LM head; the input embedding is a lookup) and s the mean tokens per example:
- forward 2N + attention 2 * layers * q_width * s (QK^T and AV, causal: half of s x s each);
- full fine-tuning: 3x the forward (the backward computes input and weight gradients);
- LoRA/QLoRA: the frozen base needs no weight gradients, 2x its forward, plus 6 x the adapters;
- DPO: the reference's forward on the same tokens (the policy with its adapter disabled for LoRA), 2N + attention.
The peak is the GPU's bf16 dense tensor-core rate from NVIDIA's datasheets (no sparsity); on a CPU (`--tiny`)
an fp32 GEMM rate measured on the spot, named as such in every JSON.
"""

from __future__ import annotations

import time
from typing import Any

from zephyr_train.preflight.architectures import Architecture

# Substring of torch.cuda.get_device_name() -> (name, bf16 dense FLOP/s); first match wins (order matters:
# "H100 NVL" and "H100 PCIe" before "H100", "L40S" before "L4").
GPU_PEAKS: list[tuple[str, str, float]] = [
    ("GH200", "NVIDIA GH200 bf16 dense (datasheet)", 989e12),
    ("H200", "NVIDIA H200 SXM bf16 dense (datasheet)", 989e12),
    ("H100 NVL", "NVIDIA H100 NVL bf16 dense (datasheet)", 835e12),
    ("H100 PCIe", "NVIDIA H100 PCIe bf16 dense (datasheet)", 756e12),
    ("H100", "NVIDIA H100 SXM bf16 dense (datasheet)", 989e12),
    ("A100", "NVIDIA A100 bf16 dense (datasheet)", 312e12),
    ("L40S", "NVIDIA L40S bf16 dense (datasheet)", 362e12),
    ("L4", "NVIDIA L4 bf16 dense (datasheet)", 121e12),
]


def gpu_peak(device_name: str) -> dict[str, Any] | None:
    for needle, name, flops in GPU_PEAKS:
        if needle.lower() in device_name.lower():
            return {"name": name, "flops": flops}
    return None


def cpu_peak(seconds: float = 1.0, size: int = 512) -> dict[str, Any]:
    """fp32 GEMM FLOP/s of this CPU at the tiny model's widths, best of a short loop."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    rate = 2 * size**3 * reps / (time.perf_counter() - start)
    return {"name": f"fp32 GEMM {size}x{size} measured on this CPU ({torch.get_num_threads()} threads)",
            "flops": rate}


def lora_matmul_params(arch: Architecture, r: int, targets: list[str]) -> int:
    shapes = arch.linear_shapes()
    return arch.num_hidden_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def flops_per_token(arch: Architecture, mean_tokens: float, stage: str, lora_params: int | None,
                    reference_forward: bool) -> float:
    """Model FLOPs per trained token (see the module docstring); `lora_params` None for full fine-tuning."""
    matmul = arch.num_hidden_layers * arch.layer_linear_params + arch.vocab_size * arch.hidden_size
    forward = 2 * matmul + 2 * arch.num_hidden_layers * arch.q_size * mean_tokens
    train = 3 * forward if lora_params is None else 2 * forward + 6 * lora_params
    if stage == "dpo" and reference_forward:
        train += forward
    return float(train)


def mfu(tokens_per_second: float | None, per_token: float, peak: dict[str, Any] | None) -> float | None:
    if not tokens_per_second or not peak:
        return None
    return tokens_per_second * per_token / peak["flops"]


def ratio(estimate: float | None, measured: float | None) -> float | None:
    """check's estimate over what was measured: above 1 the estimate is high (safe), below 1 it is low."""
    return estimate / measured if estimate and measured else None


COLUMNS = [("run", "name", "{}"), ("status", "status", "{}"), ("batch", "batch", "{}"), ("attn", "attn", "{}"),
           ("tokens/s", "tokens_per_second", "{:,.0f}"), ("MFU", "mfu", "{:.1%}"),
           ("peak alloc GiB", "max_memory_allocated_gib", "{:.1f}"),
           ("peak reserved GiB", "max_memory_reserved_gib", "{:.1f}"),
           ("check estimate GiB", "estimate_gib", "{:.1f}"), ("estimate / reserved", "estimate_ratio", "{:.2f}"),
           ("setup s", "setup_seconds", "{:.0f}"), ("train s", "train_seconds", "{:.1f}")]


def _cell(result: dict[str, Any], key: str, fmt: str) -> str:
    if key == "batch":
        b, a = result.get("per_device_train_batch_size"), result.get("gradient_accumulation_steps")
        return f"{b}x{a}" if b else ""
    if key == "attn":
        return str(result.get("attn_implementation") or "")
    value = result.get(key)
    return "" if value is None else fmt.format(value)


def table(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The markdown table of every run, with the device, the peak used and the skipped runs' reasons."""
    peak = header.get("peak") or {}
    peak_text = f"{peak['name']}, {peak['flops'] / 1e12:.3g} TFLOP/s" if peak else "unknown (MFU not computed)"
    lines = [f"# GPU evidence: {header['device_name']} ({header['date']})", "",
             f"Model: {header['model']}; {header['steps']} optimizer steps per run, tokens/s over steps 2..N; "
             f"MFU against {peak_text}; memory: torch.cuda.max_memory_allocated / max_memory_reserved at the end "
             "of training; estimate: `zephyr-train check`'s per-GPU figure for the same recipe "
             "(preflight.memory.estimate), one process, no accelerate config.", "",
             "| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for result in results:
        lines.append("| " + " | ".join(_cell(result, key, fmt) for _, key, fmt in COLUMNS) + " |")
    notes = [f"- {r['name']}: {r['status']}: {r['reason']}" for r in results if r.get("reason")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
