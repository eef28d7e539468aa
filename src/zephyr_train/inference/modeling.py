"""Loading the model and tokenizer a recipe names, with its dtype, attention and quantization.

Kept apart from the stage flows because SFT and DPO load the same way. Imports torch lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Lora, ModelSpec
from zephyr_train.data import builtin, packaged
from zephyr_train.data.sources import is_builtin, is_hub_id
from zephyr_train.errors import UserError
from zephyr_train.preflight import launcher
from zephyr_train.run_files import ADAPTER_CONFIG, MERGED


def model_location(spec: ModelSpec, source: str) -> str:
    """A local directory or Hub id to load from; UserError when it cannot exist (checked before loading)."""
    name = spec.name_or_path
    if is_builtin(name):
        try:
            return str(builtin.model_dir(name))
        except KeyError:
            raise UserError(f"{source}: model.name_or_path {name!r} is not a built-in model; use one of "
                            + ", ".join(builtin.names())) from None
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":  # rebuilt once as a model folder (data/packaged.py)
        return str(packaged.from_file(path, source))
    if path.exists():
        if (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists():
            adapter_base(path, source)  # a LoRA adapter (a handbook QLoRA SFT result): merged before loading
            return str((path / MERGED).resolve())
        if not (path / "config.json").exists():
            raise UserError(f"{source}: model.name_or_path {name!r} has no config.json; point it at a model "
                            "directory saved with save_pretrained")
        return str(path)
    if not is_hub_id(name):
        raise UserError(f"{source}: model.name_or_path {name!r} does not exist; give a model directory or a Hub id")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=spec.revision), str):
            raise UserError(f"{source}: model.name_or_path {name!r} is not in the local Hub cache and "
                            "HF_HUB_OFFLINE=1; download it first or give a local path")
    return name


def adapter_base(adapter_dir: Path, source: str = "") -> str:
    """The base model a LoRA adapter directory names; UserError when it names none or a missing directory."""
    import json

    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base or (base.startswith((".", "/", "~")) and not Path(base).expanduser().exists()):
        raise UserError(f"{source}: model.name_or_path {str(adapter_dir)!r} is a LoRA adapter whose base "
                        f"{base!r} is missing; merge it first with `zephyr-train merge {adapter_dir} --base BASE`")
    return base


def torch_dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return "auto" if torch.cuda.is_available() else torch.float32  # fp32 by default on a CPU
    return getattr(torch, name)


def quantization_config(spec: ModelSpec) -> Any:
    quant = spec.quantization
    if quant is None or not (quant.load_in_4bit or quant.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if quant.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=torch_dtype(quant.bnb_4bit_compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(quant.bnb_4bit_quant_storage or "uint8"),
        bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
    )


def load_tokenizer(location: str, spec: ModelSpec, chat_template: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, revision=spec.revision,
                                              trust_remote_code=spec.trust_remote_code)
    tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        # Mistral has no pad token. Padding is masked by position, never by id, so the real EOS
        # labels stay trained even though pad == eos (see tests/data/test_chat_template.py).
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(location: str, spec: ModelSpec) -> Any:
    from transformers import AutoModelForCausalLM

    quant = quantization_config(spec)
    dtype = torch_dtype(spec.dtype)
    if quant is not None and spec.quantization.load_in_4bit:
        dtype = quant.bnb_4bit_compute_dtype  # non-quantized layers follow the compute dtype
    kwargs: dict[str, Any] = {"revision": spec.revision, "dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if quant is not None:
        from accelerate import PartialState

        kwargs["quantization_config"] = quant
        if not launcher.shards_model():  # FSDP/ZeRO-3 place the shards themselves
            kwargs["device_map"] = {"": PartialState().device}  # each process holds its own quantized copy
    return AutoModelForCausalLM.from_pretrained(location, **kwargs)


def whole_models_from_now() -> None:
    """Load the next models whole, on one process. While the last trainer's DeepSpeed ZeRO-3 config is alive,
    transformers builds every model as ZeRO-3 shards (`zero.Init`, a collective): a main-process-only load
    after training (the merge of an adapter, the report's sample answers) then waits forever for the other
    ranks. A training stage's own config registers it again before its model loads."""
    import sys

    if "transformers.integrations.deepspeed" in sys.modules:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def lora_config(lora: Lora | None) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **lora.peft_kwargs())  # every field the recipe gives, PEFT's names
