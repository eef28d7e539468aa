"""A dense LM head for devices without Triton (CPUs): the same outputs as TRL's fused head, faster.

TRL's `SFTTrainer` scores tokens through a fused, vocabulary-tiled LM head so that GPU memory never
holds the full logits. Without Triton it falls back to per-tile torch code over every position,
trained or not, which took ~40% of a CPU step here. This head projects only the positions that
carry a label, in one matmul, and takes the log-softmax there: same loss, same metrics, and with a
small vocabulary the logits it holds are a few MB. On CUDA the fused Triton head is kept.
"""

from __future__ import annotations

import types
from typing import Any

from zephyr_train.train.patches.contract import Need, Patch, Setup, attribute, fields, fused_forward_problem, unwrapped

OUTPUT = "trl.trainer.utils.FusedCausalLMOutput"


def needs_dense_head(device: Any) -> bool:
    return getattr(device, "type", str(device)) not in ("cuda", "xpu")


def _needs(_: Setup) -> tuple[Need, ...]:
    return (attribute("trl.trainer.sft_trainer.add_fused_lm_head"),
            fields(OUTPUT, ("loss", "log_probs", "entropy", "is_top1", "label_mask")))


def _unwanted(setup: Setup) -> str | None:
    return None if needs_dense_head(setup.device) else f"TRL's Triton head runs on {setup.device}"


def _install(trainer: Any, _: Setup) -> str | None:
    model = unwrapped(trainer.model)
    problem = fused_forward_problem(model)
    if problem is None:
        use_dense_lm_head(model)
    return problem


def use_dense_lm_head(model: Any) -> None:
    """Re-patch `model.forward` (already patched by TRL) so `fused_lm_head=True` runs densely."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    fused_forward = model.forward
    # Logits that TRL's head rescales (softcapping, logit scales) keep TRL's head: this one does not rescale.
    text_config = model.config.get_text_config()
    rescaled = any(getattr(text_config, name, None) is not None for name in
                   ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling"))

    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or shift_labels is not None or rescaled:
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:]
        mask = labels != -100
        head = self.get_output_embeddings()
        logits = head(hidden[mask]).float()
        log_softmax = torch.log_softmax(logits, dim=-1)
        targets = labels[mask]
        picked = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():  # metrics only
            entropy = -(log_softmax.exp() * log_softmax).sum(-1)
            is_top1 = logits.argmax(-1) == targets
        def spread(values: Any) -> Any:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        log_probs = spread(picked)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=spread(entropy),
                                   is_top1=spread(is_top1), label_mask=mask)

    model.forward = types.MethodType(forward, model)


PATCH = Patch(name="lm_head", does="dense LM head on labelled positions", needs=_needs, unwanted=_unwanted,
              after_init=_install)
