"""DPO log-probs only where they count: packed pairs, completion positions only, for policy and reference.

TRL 1.16's `DPOTrainer` scores every sequence through its fused LM head (`fused_lm_head=True`). With
Triton (CUDA, XPU) that head projects only the positions that carry a label, in vocabulary tiles, and
never holds the full logits. Without Triton it falls back to per-tile torch code over *every* position,
prompt and padding included, in 4096-token tiles of the full vocabulary: with Mistral's 32000 tokens a
tile is 0.5 GB and each of its half-dozen temporaries another 0.5 GB, so a CPU process spent more time in
the kernel allocating memory than computing (22 s a step at batch 8, max_length 1024).

`install` replaces the model's forward (after TRL has patched it, so generation and every other call
are untouched) for the calls TRL makes with `fused_lm_head=True`, the policy's and the reference's
alike: the padded batch is first re-laid into packed rows (`pair_packing`), the backbone runs on those,
and only the hidden states of completion positions reach the LM head. The head is then
  - "dense": one `linear` and a log-sum-exp per chunk of 1024 completion tokens, nothing of the vocabulary
    kept for the backward, which recomputes each chunk's logits (never a prompt or padding position);
  - "trl": TRL's own `ChunkedLogProbFunction` on the same completion positions: its Triton kernel on
    CUDA/XPU (nothing of the logits kept; the backward recomputes them), its torch tiles elsewhere.
`auto` picks "trl" where TRL's Triton kernel runs and "dense" elsewhere. Both return what TRL's loss and
metrics read: log-probs, entropy, mean logits, top-1 hits, label mask (and `log_sum_sq_probs` for WPO).
Calls this cannot serve exactly (pre-shifted labels, MoE router losses, vision inputs, prompt-learning
PEFT, models that rescale or soft-cap their logits) go to TRL's forward unchanged.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

from zephyr_train.train.patches import contract, pair_packing, segment_attention
from zephyr_train.train.patches.contract import Need, Patch, Setup, attribute, fields, parameters, unwrapped

HEADS = ("auto", "dense", "trl")
CHUNK = 1024  # completion tokens per projection: 1024 x 32000 fp32 logits = 131 MB at a time
STATS = "_zephyr_pair_packing"  # on a patched model: its head and the positions packed so far
# ChunkedLogProbFunction.apply's 9 positional arguments, in the order trl_head passes them
KERNEL_ARGS = ("hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping",
               "logit_scale", "outputs")
_RESCALING = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def choose(choice: str, device: Any) -> str:
    """The head `auto` means on this device: TRL's where its Triton kernel runs, ours elsewhere."""
    if choice != "auto":
        return choice
    import torch
    from trl.kernels.chunked_logprob import _use_triton

    return "trl" if _use_triton(torch.device(device)) else "dense"


def dense_head(hidden: Any, weight: Any, bias: Any, targets: Any, outputs: tuple[str, ...]) -> tuple:
    """(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) of `targets`, one row per token."""
    return _dense_function(hidden.device.type).apply(hidden, weight, bias, targets, outputs)


_DENSE: dict[str, Any] = {}  # device type -> the autograd function


def _dense_function(device_type: str) -> Any:
    """The dense head as one autograd function that keeps nothing vocabulary-sized for its backward.

    Autograd's log_softmax keeps completion tokens x vocabulary floats until the backward (550 MB a step for
    SmolLM2's 49152 tokens at 8 pairs); this keeps one log-sum-exp per token and recomputes each chunk's
    logits in the backward (one more LM-head matmul, ~3% of a SmolLM2 DPO step), with fewer passes over the
    logits than log_softmax + its backward took. Same values and gradients (tests/train/test_dpo_log_probs.py)."""
    if device_type in _DENSE:
        return _DENSE[device_type]
    import torch
    from torch.nn import functional as F  # noqa: N812

    class DenseLogProbs(torch.autograd.Function):
        # the backward recomputes the logits under the forward's autocast state (mixed precision), as they were
        @staticmethod
        @torch.amp.custom_fwd(device_type=device_type)
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, outputs: tuple[str, ...]) -> tuple:
            picked, lses, entropy, sq, mean, top1 = [], [], [], [], [], []
            for h, t in zip(hidden.split(CHUNK), targets.split(CHUNK), strict=True):
                logits = F.linear(h, weight, bias).float()
                top, best = logits.max(-1)
                exp = (logits - top.unsqueeze(-1)).exp_()  # one pass gives the normalizer and the entropy
                total = exp.sum(-1)
                lse = top + total.log()
                lses.append(lse)
                picked.append(logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - lse)
                if "entropy" in outputs:  # H = lse - sum p * logits
                    entropy.append(lse - torch.linalg.vecdot(exp, logits) / total)
                if "log_sum_sq_probs" in outputs:  # log sum p^2
                    sq.append(torch.log(torch.linalg.vecdot(exp, exp)) - 2 * total.log())
                if "mean_logits" in outputs:
                    mean.append(logits.mean(-1))
                if "is_top1" in outputs:
                    top1.append(best == t)
                del logits, exp
            ctx.save_for_backward(hidden, weight, bias, targets, torch.cat(lses))
            found = [torch.cat(parts) if parts else None for parts in (picked, entropy, sq, mean, top1)]
            ctx.mark_non_differentiable(*(x for x in found[1:] if x is not None))
            return tuple(found)

        @staticmethod
        @torch.amp.custom_bwd(device_type=device_type)
        def backward(ctx: Any, grad: Any, *_: Any) -> tuple:
            hidden, weight, bias, targets, lse = ctx.saved_tensors
            want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
            grad_hidden = torch.empty_like(hidden) if want_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
            grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
            start = 0
            for h, t in zip(hidden.split(CHUNK), targets.split(CHUNK), strict=True):
                rows = slice(start, start + len(h))
                g = grad[rows].float()
                # d log p(t) / d logits = onehot(t) - softmax, times the incoming gradient
                grad_logits = (F.linear(h, weight, bias).float() - lse[rows].unsqueeze(-1)).exp_()
                grad_logits.mul_(-g.unsqueeze(-1))
                grad_logits.scatter_add_(-1, t.unsqueeze(-1), g.unsqueeze(-1))
                grad_logits = grad_logits.to(hidden.dtype)
                if want_hidden:
                    grad_hidden[rows] = grad_logits @ weight
                if want_weight:
                    grad_weight.addmm_(grad_logits.T.float(), h.float())
                if want_bias:
                    grad_bias += grad_logits.float().sum(0)
                start += len(h)
            return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                    None if grad_bias is None else grad_bias.to(bias.dtype), None, None)

    _DENSE[device_type] = DenseLogProbs
    return DenseLogProbs


def trl_head(hidden: Any, weight: Any, bias: Any, targets: Any, outputs: tuple[str, ...]) -> tuple:
    """TRL's fused head (Triton on CUDA/XPU, torch tiles elsewhere) on the given positions only."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    return ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
                                        outputs)


def install(model: Any, head: str, outputs: tuple[str, ...] = ("log_probs",)) -> None:
    """Patch `model.forward` (already patched by TRL's `add_fused_lm_head`) for `fused_lm_head=True` calls."""
    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = model.forward
    project = dense_head if head == "dense" else trl_head
    text_config = model.config.get_text_config()
    exact = (text_config is model.config and not getattr(text_config, "output_router_logits", False)
             and all(getattr(text_config, name, None) is None for name in _RESCALING))
    stats = model.__dict__.setdefault(STATS, {"real_tokens": 0, "positions": 0, "shared_prompts": 0, "head": head})
    segment_attention.use(model)

    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        extra = set(kwargs) - {"input_ids", "attention_mask", "use_cache"}
        if not fused_lm_head or not exact or args or extra or shift_labels is not None or labels is None \
                or kwargs.get("attention_mask") is None or kwargs.get("input_ids") is None:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        input_ids = kwargs["input_ids"]
        prompts = pair_packing.prompt_lengths(labels) if segment_attention.in_use(self) else None
        packed = pair_packing.pack(input_ids, kwargs["attention_mask"], prompts=prompts)
        stats["real_tokens"] += packed.real_tokens
        stats["positions"] += packed.positions
        stats["shared_prompts"] += packed.shared_prompts
        hidden = self.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                 use_cache=False).last_hidden_state
        shifted = labels[:, 1:]
        mask = shifted != -100
        lm_head = self.get_output_embeddings()
        rows = hidden.reshape(-1, hidden.size(-1))[packed.index[:, :-1][mask]].to(lm_head.weight.device)
        per_token = project(rows, lm_head.weight, lm_head.bias, shifted[mask].to(lm_head.weight.device), outputs)
        log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits, is_top1=is_top1,
                                   label_mask=mask)

    model.forward = types.MethodType(forward, model)


def padding_fraction(model: Any) -> float | None:
    """Share of the positions the policy computed in packed DPO forwards that were padding (None before any)."""
    stats = unwrapped(model).__dict__.get(STATS)
    return 1 - stats["real_tokens"] / stats["positions"] if stats and stats["positions"] else None


@contextlib.contextmanager
def installed(choice: str, device: Any) -> Iterator[str]:
    """While `DPOTrainer.__init__` runs, follow each of its `add_fused_lm_head` calls (policy and reference)
    with `install`, so the reference log-probs TRL precomputes in `__init__` already use this path.
    Yields the head chosen ("dense" or "trl")."""
    from trl.trainer import dpo_trainer

    head = choose(choice, device)
    original = dpo_trainer.add_fused_lm_head

    def add_then_install(model: Any, *args: Any, outputs: tuple[str, ...] = ("log_probs",), **kwargs: Any) -> None:
        original(model, *args, outputs=outputs, **kwargs)
        if contract.fused_forward_problem(model) is None:  # else left as TRL made it; `_check_installed` says why
            install(model, head, outputs)

    dpo_trainer.add_fused_lm_head = add_then_install
    try:
        yield head
    finally:
        dpo_trainer.add_fused_lm_head = original


def layout_of(model: Any) -> str:
    """How a patched model lays out DPO batches, for the console."""
    shared = "each prompt once, " if segment_attention.in_use(unwrapped(model)) else ""
    return f"packed pairs, {shared}completion positions only"


def head_of(model: Any) -> str | None:
    """The head a patched model's log-probs go through ("dense" or "trl"); None when the patch is not on it."""
    return unwrapped(model).__dict__.get(STATS, {}).get("head")


def _needs(setup: Setup) -> tuple[Need, ...]:
    needs = [parameters("trl.trainer.dpo_trainer.add_fused_lm_head", ("model", "temperature", "cast_lm_head_to_fp32",
                                                                       "outputs")),
             fields("trl.trainer.utils.FusedCausalLMOutput", ("loss", "log_probs", "entropy", "log_sum_sq_probs",
                                                               "mean_logits", "is_top1", "label_mask"))]
    if setup.lm_head == "auto":
        needs.append(attribute("trl.kernels.chunked_logprob._use_triton"))
    if setup.lm_head in ("auto", "trl"):
        needs += [parameters("trl.kernels.ChunkedLogProbFunction.forward", KERNEL_ARGS, skip=1),
                  attribute("trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE")]
    return tuple(needs)


def _check_installed(trainer: Any, _: Setup) -> str | None:
    """TRL must have called `add_fused_lm_head` on the policy while it was built, or nothing was installed."""
    if head_of(trainer.model) is not None:
        return None
    problem = contract.fused_forward_problem(unwrapped(trainer.model))
    return problem or "DPOTrainer.__init__ never called add_fused_lm_head"


PATCH = Patch(name="dpo_log_probs", does="log-probs of packed pairs at completion positions only", needs=_needs,
              during_init=lambda setup: installed(setup.lm_head, setup.device), after_init=_check_installed)
