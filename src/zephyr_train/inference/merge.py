"""Merging a LoRA adapter into its base, in 16/32-bit: never into 4-bit weights.

DPO after LoRA SFT trains a fresh adapter on the merged SFT model, whose disabled-adapter forward is
then the reference. (Pointing a DPO script at the SFT adapter instead silently replaces it with a
fresh one, so DPO starts from the raw base.) A QLoRA adapter is merged into the base loaded in its
compute dtype, since merging into quantized weights is lossy.
"""

from __future__ import annotations

import json
from pathlib import Path

from zephyr_train.config.recipe import ModelSpec
from zephyr_train.errors import UserError
from zephyr_train.inference.modeling import torch_dtype
from zephyr_train.inference.portable import resolve_base
from zephyr_train.run_files import ADAPTER_CONFIG, MERGED


def merged_dir(adapter_dir: Path) -> Path:
    return adapter_dir / MERGED


def merge_adapter(adapter_dir: Path, base_location: str, spec: ModelSpec, target: Path | None = None) -> Path:
    """Merge `adapter_dir` into its base once; returns the directory of the merged model."""
    target = Path(target) if target else merged_dir(adapter_dir)
    if (target / "config.json").exists():
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer


    quant = spec.quantization
    dtype = torch_dtype(quant.bnb_4bit_compute_dtype if quant and quant.load_in_4bit else spec.dtype)
    base = AutoModelForCausalLM.from_pretrained(base_location, revision=spec.revision,
                                                dtype=torch.float32 if dtype == "auto" else dtype,
                                                trust_remote_code=spec.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = target.with_name(target.name + ".tmp")
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(tmp)
    (tmp / "merged_from.json").write_text(json.dumps({"adapter": str(adapter_dir), "base": base_location}))
    tmp.rename(target)
    return target


def merge_command(adapter_dir: str, out: str, dtype: str, base: str | None = None) -> Path:
    """`zephyr-train merge`: any LoRA adapter into the base its config names (or `base`), saved as a
    plain model in `dtype` that transformers loads without PEFT."""

    config = Path(adapter_dir) / ADAPTER_CONFIG
    if not config.exists():
        raise UserError(f"{adapter_dir} holds no adapter_config.json; give a LoRA adapter directory")
    if not base:

        base = resolve_base(Path(adapter_dir), json.loads(config.read_text()).get("base_model_name_or_path") or "")
    if not base:
        raise UserError(f"{config} names no base model; pass --base MODEL")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} is not empty; give a new directory for the merged model")
    if target.exists():
        target.rmdir()
    return merge_adapter(Path(adapter_dir), base, ModelSpec(name_or_path=base, dtype=dtype), target)
