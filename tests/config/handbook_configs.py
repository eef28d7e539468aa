"""The alignment-handbook's four published zephyr-7b-beta configs (recipes/zephyr-7b-beta/{sft,dpo}/
config_{full,qlora}.yaml on its main branch), written here key by key from their published values, and
the substitutions a CPU box without Hub access needs. Not copies of the files."""

from __future__ import annotations

import copy

# The handbook's Zephyr template: one line per role, `eos_token` after each message.
HANDBOOK_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] "
    "+ eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
    "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _ultrachat(split: str) -> dict:
    return {"id": "HuggingFaceH4/ultrachat_200k", "config": "default", "split": split, "columns": ["messages"],
            "weight": 1.0}


def _ultrafeedback(split: str) -> dict:
    return {"id": "HuggingFaceH4/ultrafeedback_binarized", "config": "default", "split": split,
            "columns": ["chosen", "rejected"], "weight": 1.0}


_SFT_TRAINER = {
    "dataset_num_proc": 12, "bf16": True, "do_eval": True, "eval_strategy": "epoch",
    "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "hub_strategy": "every_save", "log_level": "info", "logging_steps": 5, "logging_strategy": "steps",
    "lr_scheduler_type": "cosine", "max_seq_length": 2048, "max_steps": -1, "num_train_epochs": 1,
    "overwrite_output_dir": True, "per_device_eval_batch_size": 8, "push_to_hub": True,
    "save_strategy": "steps", "save_steps": 100, "save_total_limit": 1, "seed": 42, "warmup_ratio": 0.1,
}
SFT_FULL = {
    "model_name_or_path": "mistralai/Mistral-7B-v0.1", "model_revision": "main", "torch_dtype": "bfloat16",
    "attn_implementation": "flash_attention_2", "chat_template": HANDBOOK_TEMPLATE,
    "dataset_mixture": {"datasets": [_ultrachat("train_sft"), _ultrachat("test_sft")], "test_split_size": 1000,
                        "seed": 0},
    **_SFT_TRAINER, "gradient_accumulation_steps": 1, "hub_model_id": "zephyr-7b-sft-full", "learning_rate": 2.0e-05,
    "output_dir": "data/zephyr-7b-sft-full", "per_device_train_batch_size": 16, "remove_unused_columns": True,
    "report_to": ["wandb"],
}
SFT_QLORA = {
    **SFT_FULL, "load_in_4bit": True, "use_peft": True, "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.05,
    "lora_target_modules": TARGETS, "gradient_accumulation_steps": 2, "hub_model_id": "zephyr-7b-sft-qlora",
    "learning_rate": 2.0e-04, "output_dir": "data/zephyr-7b-sft-qlora", "per_device_train_batch_size": 4,
    "report_to": ["tensorboard"],
}
del SFT_QLORA["remove_unused_columns"]
_DPO_TRAINER = {
    "dataset_num_proc": 12, "bf16": True, "beta": 0.01, "do_eval": True, "eval_strategy": "steps", "eval_steps": 100,
    "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}, "log_level": "info",
    "logging_steps": 10, "lr_scheduler_type": "cosine", "max_length": 1024, "max_prompt_length": 512,
    "num_train_epochs": 1, "per_device_eval_batch_size": 8, "push_to_hub": True, "save_strategy": "steps",
    "save_steps": 100, "save_total_limit": 1, "seed": 42, "warmup_ratio": 0.1,
}
DPO_FULL = {
    "model_name_or_path": "alignment-handbook/zephyr-7b-sft-full", "torch_dtype": None,
    "dataset_mixture": {"datasets": [_ultrafeedback("train_prefs"), _ultrafeedback("test_prefs")],
                        "test_split_size": 2000, "seed": 0},
    **_DPO_TRAINER, "gradient_accumulation_steps": 2, "hub_model_id": "zephyr-7b-dpo-full", "learning_rate": 5.0e-7,
    "optim": "adamw_torch", "output_dir": "data/zephyr-7b-dpo-full", "per_device_train_batch_size": 8,
}
# still in the 2024 format: dataset_mixer + dataset_splits
DPO_QLORA = {
    "model_name_or_path": "alignment-handbook/zephyr-7b-sft-qlora", "torch_dtype": "bfloat16",
    "attn_implementation": "flash_attention_2", "use_peft": True, "load_in_4bit": True, "lora_r": 128,
    "lora_alpha": 128, "lora_dropout": 0.05, "lora_target_modules": TARGETS,
    "dataset_mixer": {"HuggingFaceH4/ultrafeedback_binarized": 1.0}, "dataset_splits": ["train_prefs", "test_prefs"],
    **_DPO_TRAINER, "gradient_accumulation_steps": 4, "hub_model_id": "zephyr-7b-dpo-qlora", "learning_rate": 5.0e-6,
    "optim": "paged_adamw_32bit", "output_dir": "data/zephyr-7b-dpo-qlora", "per_device_train_batch_size": 4,
}
PUBLISHED = {"sft/config_full.yaml": SFT_FULL, "sft/config_qlora.yaml": SFT_QLORA,
             "dpo/config_full.yaml": DPO_FULL, "dpo/config_qlora.yaml": DPO_QLORA}
LOCAL_DATA = {"HuggingFaceH4/ultrachat_200k": "builtin:ultrachat-sample",
              "HuggingFaceH4/ultrafeedback_binarized": "builtin:ultrafeedback-sample"}


def on_cpu(config: dict, model: str, output_dir: str, steps: int = 2) -> dict:
    """What no CPU box without the Hub can follow, changed: model and data ids to local copies,
    flash_attention_2 -> sdpa, bf16 off (fp32), a few steps with small batches, no Hub push or tracker,
    one data worker, and CUDA's paged optimizer -> plain AdamW. Every other key stays as published."""
    config = copy.deepcopy(config)
    config["model_name_or_path"] = model
    if config.get("attn_implementation") == "flash_attention_2":
        config["attn_implementation"] = "sdpa"
    if config.get("torch_dtype") == "bfloat16":
        config["torch_dtype"] = "float32"
    if "dataset_mixture" in config:
        for entry in config["dataset_mixture"]["datasets"]:
            entry["id"] = LOCAL_DATA[entry["id"]]
    if "dataset_mixer" in config:
        config["dataset_mixer"] = {LOCAL_DATA[k]: v for k, v in config["dataset_mixer"].items()}
    if config.get("optim") == "paged_adamw_32bit":
        config["optim"] = "adamw_torch"
    config.update(bf16=False, max_steps=steps, per_device_train_batch_size=2, per_device_eval_batch_size=8,
                  push_to_hub=False, report_to=["none"], dataset_num_proc=1, output_dir=output_dir)
    if "max_seq_length" in config:
        config["max_seq_length"] = 256
    else:
        config.update(max_length=256, max_prompt_length=128)
    return config
