"""Per-GPU memory of a training stage, estimated from the architecture alone (no weights, no torch).

The point is the order of magnitude before an hour of GPU time: does QLoRA fit one 24 GiB card, does
full fine-tuning need ZeRO-3. Each part follows what the trainer really allocates:
- weights in the load dtype (4-bit: 0.5 byte per linear weight plus one fp32 absmax per 64, the
  embeddings and LM head stay in the compute dtype); ZeRO-3/FSDP keep 1/N of them plus the layers
  being gathered;
- gradients and AdamW's two moments for what is trained: without DeepSpeed or FSDP they take the
  parameter's dtype (bf16 weights give bf16 moments); DeepSpeed keeps fp32 master weights and moments
  (12 bytes), accelerate's FSDP upcasts the sharded parameters to fp32 (4 + 4 + 8 bytes); DDP adds
  all-reduce buckets the size of the gradients;
  LoRA adapters are fp32 (PEFT upcasts them);
- activations: with gradient checkpointing one hidden state per layer plus one layer recomputed,
  without it every layer's intermediates (FlashAttention/SDPA: linear in the sequence); DPO runs
  chosen and rejected in one batch, so twice the tokens;
- the logits in the compute dtype, their fp32 upcast, the log-softmax kept for backward and its gradient;
- DPO's reference: none with LoRA (the adapter is disabled) or precomputed log-probs, else a frozen copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from zephyr_train.config.recipe import Lora, Recipe, Stage
from zephyr_train.preflight.architectures import Architecture
from zephyr_train.preflight.launcher import Launch

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: the 7B configs say bf16
OVERHEAD = 1.5 * GIB  # CUDA context, cuBLAS/NCCL workspaces, allocator fragmentation
GATHERED_LAYERS = 2  # ZeRO-3/FSDP hold the layer computing and the one prefetched, unsharded


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # bytes on each GPU, by what holds them
    cpu: float = 0.0  # bytes moved to CPU memory per process by offloading

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = ", ".join(f"{name} {value / GIB:.1f}" for name, value in self.parts.items() if value >= 0.05 * GIB)
        offload = f"; {self.cpu / GIB:.1f} GiB offloaded to CPU RAM" if self.cpu >= 0.05 * GIB else ""
        return f"{shown} = {self.total / GIB:.1f} GiB per GPU{offload}"


def lora_params(arch: Architecture, lora: Lora) -> int:
    """Trained adapter parameters: r x (in + out) per targeted projection (each expert's, in an MoE), plus
    DoRA's magnitude vector (one value per output feature), on the layers `layers_to_transform` names."""
    shapes = arch.linear_shapes()
    names = [lora.target_modules] if isinstance(lora.target_modules, str) else lora.target_modules
    targets = list(shapes) if "all-linear" in names else [t for t in names if t in shapes]
    per_layer = sum((lora.r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if lora.get("use_dora") else 0))
                    * arch.copies(t) for t in targets)
    layers = lora.get("layers_to_transform")
    count = arch.num_hidden_layers if layers is None else 1 if isinstance(layers, int) else len(set(layers))
    return count * per_layer


def weight_bytes(arch: Architecture, recipe: Recipe) -> float:
    quant, dtype = recipe.model.quantization, DTYPE_BYTES.get(recipe.model.dtype, 2)
    linear = arch.num_hidden_layers * arch.layer_linear_params
    if quant and quant.load_in_4bit:
        per_weight = 0.5 + (4.5 / 64 / 4 if quant.bnb_4bit_use_double_quant else 4 / 64)
        return linear * per_weight + (arch.params - linear) * DTYPE_BYTES[quant.bnb_4bit_compute_dtype]
    if quant and quant.load_in_8bit:
        return linear * 1.0 + (arch.params - linear) * dtype
    return arch.params * dtype


def pure_low_precision(recipe: Recipe, stage_name: str, launch: Launch) -> bool:
    """Full fine-tuning of 16-bit weights with no fp32 master copy (neither DeepSpeed nor FSDP keeps one):
    AdamW's updates below the weights' 8-bit mantissa round away, at Zephyr's 2e-5 most of them."""
    return recipe.stage(stage_name).lora is None and DTYPE_BYTES.get(recipe.model.dtype, 2) == 2 \
        and recipe.model.quantization is None and launch.distributed_type not in ("DEEPSPEED", "FSDP")


def optimizer_bytes_per_param(optim: str, param_bytes: int, deepspeed: bool) -> float:
    """AdamW's two moments (plus DeepSpeed's fp32 master copy) per trained parameter."""
    optim = optim.lower()
    if "8bit" in optim:
        moments = 2.0
    elif "adafactor" in optim or optim.startswith("sgd"):
        moments = 0.5 * param_bytes  # factored second moment / momentum only: small
    else:
        moments = 8.0 if ("32bit" in optim or deepspeed) else 2.0 * param_bytes
    return moments + (4.0 if deepspeed else 0.0)


def activation_bytes(arch: Architecture, tokens: int, act_bytes: int, checkpointing: bool, eager: bool,
                     seq: int) -> tuple[float, float]:
    """(hidden activations, logits and their loss buffers) for one micro-batch of `tokens` tokens."""
    h, i = arch.hidden_size, arch.active_intermediate  # MoE: the top-k experts each token goes through
    per_layer = act_bytes * (10 * h + 4 * i)  # norms, q/k/v/o inputs and outputs, gate/up/act/product
    if eager:  # the attention matrix and its softmax, per token: heads x sequence
        per_layer += 2 * act_bytes * arch.num_attention_heads * seq
    if checkpointing:
        hidden = tokens * (arch.num_hidden_layers * h * act_bytes + per_layer)
    else:
        hidden = tokens * arch.num_hidden_layers * per_layer
    return hidden, tokens * arch.vocab_size * (act_bytes + 12)


def estimate(arch: Architecture, recipe: Recipe, stage_name: str, launch: Launch, gpus: int,
             batch: int | None = None, checkpointing: bool | None = None) -> Estimate:
    """Bytes per GPU for `stage_name` of `recipe` run as `launch` on `gpus` GPUs; `batch` and
    `checkpointing` replace the recipe's per-GPU batch and gradient checkpointing."""
    stage = recipe.stage(stage_name)
    args = stage.trainer
    dtype = DTYPE_BYTES.get(recipe.model.dtype, 2)
    half = args.get("bf16") or args.get("fp16") or dtype == 2
    act_bytes = 2 if half else 4
    deepspeed = launch.distributed_type == "DEEPSPEED"
    shards = gpus if launch.sharding in ("zero3", "fsdp") else 1
    state_shards = gpus if launch.sharding else 1  # ZeRO-2 shards gradients and optimizer states only

    est = Estimate()
    weights = weight_bytes(arch, recipe)
    est.parts["weights"] = weights / shards
    if shards > 1:
        est.parts["gathered layers"] = GATHERED_LAYERS * arch.layer_linear_params * dtype

    if stage.lora is not None:
        trained, param_bytes = lora_params(arch, stage.lora), 4
        est.parts["LoRA adapters"] = trained * param_bytes / shards
        grad_bytes, master = 4, False
    elif launch.sharding == "fsdp" and half:  # accelerate upcasts FSDP's sharded parameters to fp32
        trained, param_bytes, grad_bytes, master = arch.params, 4, 4, False
        est.parts["weights"] = arch.params * 4 / shards
    else:
        trained, param_bytes, master = arch.params, dtype, deepspeed
        grad_bytes = 2 if deepspeed and half else dtype
    est.parts["gradients"] = trained * grad_bytes / state_shards
    if launch.distributed_type == "MULTI_GPU" and gpus > 1:
        est.parts["DDP buckets"] = trained * grad_bytes  # all-reduce buffers the size of the gradients
    optimizer = trained * optimizer_bytes_per_param(args.get("optim") or "adamw_torch", param_bytes, master)
    if launch.offload:
        est.cpu += optimizer / state_shards
        optimizer = 0.0
    est.parts["optimizer"] = optimizer / state_shards

    if stage.spec.holds_reference(stage):  # a frozen copy of the starting model (DPO's full fine-tuning)
        est.parts[f"{stage.spec.label} reference"] = weights / shards

    seq = stage.setting("max_length")
    micro = batch or stage.setting("per_device_train_batch_size")
    tokens = micro * seq * stage.spec.sequences_per_row  # DPO: chosen and rejected together
    if checkpointing is None:
        checkpointing = bool(args.get("activation_checkpointing"))
    hidden, logits = activation_bytes(arch, tokens, act_bytes, checkpointing,
                                      recipe.model.attn_implementation == "eager", seq)
    est.parts["activations"] = hidden
    est.parts["logits"] = logits
    est.parts["overhead"] = OVERHEAD
    return est


def global_batch(stage: Stage, gpus: int) -> int:
    return stage.setting("per_device_train_batch_size") * stage.setting("gradient_accumulation_steps") * gpus


def optimizer_steps(rows: int | None, stage: Stage, gpus: int) -> int | None:
    """Steps of the whole stage for `rows` training rows (max_steps wins when set)."""
    if stage.setting("max_steps") > 0:
        return stage.setting("max_steps")
    if rows is None:
        return None
    return math.ceil(math.ceil(rows / global_batch(stage, gpus)) * stage.setting("num_train_epochs"))
