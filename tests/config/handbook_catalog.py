"""Every SFT/DPO/ORPO config the alignment-handbook publishes (recipes/ at its HEAD 925acdf, 22 files), written
here key by key from the published key sets and values (not copies of the files; the long SmolLM3 template is
ours, with the same variables and `{% generation %}` markers), plus the local data each one's shape runs on.

`CATALOG` maps each file's path under recipes/ to (stage, config). The four zephyr-7b-beta ones come from
`handbook_configs`."""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

from tests.config.handbook_configs import HANDBOOK_TEMPLATE, PUBLISHED

MESSAGES, PAIRS, PROMPT_PAIRS = ["messages"], ["chosen", "rejected"], ["chosen", "rejected", "prompt"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SMOL_SYSTEM = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
               "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' "
               "}}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
STARCHAT = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
            + CHATML)
GEMMA = ("{% if messages[0]['role'] == 'user' or messages[0]['role'] == 'system' %}{{ bos_token }}{% endif %}"
         "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
         "+ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% elif "
         "messages[-1]['role'] == 'assistant' %}{{ eos_token }}{% endif %}")
MID = ("{%- for message in messages -%}\n    {{- \"<|im_start|>\" + message.role + \"\\n\" + message.content + "
       "\"<|im_end|>\" + \"\\n\" -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n\t{{- "
       "\"<|im_start|>assistant\\n\" -}}\n{%- endif -%}")
# SmolLM3's shape: `enable_thinking` (a row's chat_template_kwargs) picks /think or /no_think in a system turn,
# assistant turns inside {% generation %} markers (SFT's assistant_only_loss), an empty think block without it.
SMOLLM3 = (
    "{%- if enable_thinking is not defined -%}{%- set enable_thinking = true -%}{%- endif -%}"
    "{%- set mode = '/think' if enable_thinking else '/no_think' -%}"
    "{%- set custom = messages[0].content if messages[0].role == 'system' else '' -%}"
    "{{- '<|im_start|>system\\n## Metadata\\nReasoning Mode: ' + mode + '\\n## Custom Instructions\\n' + custom"
    " + '<|im_end|>\\n' -}}"
    "{%- for message in messages -%}{%- set content = message.content if message.content is string else '' -%}"
    "{%- if message.role == 'user' -%}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' -%}{% generation %}"
    "{%- if enable_thinking -%}{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else -%}{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n' + content + '<|im_end|>\\n' }}{%- endif -%}"
    "{% endgeneration %}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def entry(dataset: str, split: str, columns: list[str], weight: float = 1.0, config: str = "default") -> dict:
    return {"id": dataset, "config": config, "split": split, "columns": columns, "weight": weight}


def both(dataset: str, columns: list[str], weight: float = 1.0, kind: str = "sft") -> list[dict]:
    """The handbook's habit: a dataset's train split and its test split, both listed for training."""
    return [entry(dataset, f"train_{kind}", columns, weight), entry(dataset, f"test_{kind}", columns, weight)]


def mixture(datasets: list[dict], size: float | None, seed: int | None = 0) -> dict:
    return {"datasets": datasets, **({"test_split_size": size} if size is not None else {}),
            **({"seed": seed} if seed is not None else {})}


def model(name: str, revision: str | None = "main", flash: bool = True, remote: bool = False,
          dtype: str | None = "bfloat16") -> dict:
    keys = {"model_name_or_path": name, **({"model_revision": revision} if revision else {}), "torch_dtype": dtype}
    return {**keys, **({"attn_implementation": "flash_attention_2"} if flash else {}),
            **({"trust_remote_code": True} if remote else {})}


GC = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
GC_REENTRANT = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}}
# The 2024 SFT configs' trainer block (smollm, smollm2, starchat2, gemma, constitutional-ai).
SFT_2024 = {"bf16": True, "do_eval": True, "eval_strategy": "epoch", **GC, "hub_strategy": "every_save",
            "log_level": "info", "logging_steps": 5, "logging_strategy": "steps", "lr_scheduler_type": "cosine",
            "max_steps": -1, "overwrite_output_dir": True, "push_to_hub": True, "remove_unused_columns": True,
            "seed": 42, "warmup_ratio": 0.1}
DPO_2024 = {"bf16": True, "do_eval": True, "eval_strategy": "steps", "eval_steps": 100, **GC, "log_level": "info",
            "logging_steps": 10, "lr_scheduler_type": "cosine", "max_length": 1024, "max_prompt_length": 512,
            "optim": "adamw_torch", "push_to_hub": True, "seed": 42, "warmup_ratio": 0.1}
NO_SAVE = {"save_strategy": "no"}
BOARDS = {"report_to": ["tensorboard", "wandb"]}
SKIP_SPECIALS = {"dataset_kwargs": {"add_special_tokens": False, "append_concat_token": False}}
SMOLLM3_SCHEDULE = {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
                    "max_grad_norm": 0.2, "log_level": "info", "logging_steps": 1, "logging_strategy": "steps",
                    "hub_strategy": "every_save", "push_to_hub": True, "report_to": ["wandb"], "seed": 42,
                    "use_liger_kernel": True, "overwrite_output_dir": True, "per_device_train_batch_size": 1,
                    "bf16": True, "do_eval": False, "eval_strategy": "no", "gradient_accumulation_steps": 2,
                    **GC_REENTRANT}
SMOLLM3_SFT_SPLITS = [
    ("smoltalk_smollm3_everyday_conversations_no_think", 1.0), ("smoltalk_smollm3_systemchats_30k_no_think", 1.0),
    ("tulu_3_sft_personas_instruction_following_no_think", 1.0), ("hermes_function_calling_v1_no_think", 1.0),
    ("smoltalk_smollm3_smol_magpie_ultra_no_think", 0.5), ("smoltalk_multilingual_8languages_lang_5_no_think", 1.0),
    ("table_gpt_no_think", 1.0), ("OpenHermes_2.5_no_think", 0.5), ("OpenThoughts3_1.2M_no_think_no_think", 0.4),
    ("Mixture_of_Thoughts_science_no_think", 1), ("smoltalk_smollm3_explore_instruct_rewriting_no_think", 1),
    ("smoltalk_smollm3_smol_rewrite_no_think", 1), ("smoltalk_smollm3_smol_summarize_no_think", 1),
    ("LongAlign_64k_context_lang_annotated_lang_6_no_think", 1), ("multi_turn_reasoning_if_think", 1.0),
    ("smoltalk_everyday_convs_reasoning_Qwen3_32B_think", 1.0), ("smoltalk_systemchats_Qwen3_32B_think", 1.0),
    ("xlam_traces_no_think", 1), ("smolagents_toolcalling_traces_think", 1), ("s1k_1.1_think", 1.0),
    ("LongAlign_64k_Qwen3_32B_yarn_131k_think", 1.0), ("aya_dataset_Qwen3_32B_think", 1.0),
    ("smoltalk_multilingual8_Qwen3_32B_think", 0.3), ("OpenThoughts3_1.2M_think", 0.02),
    ("table_gpt_Qwen3_32B_think", 1)]
SMOLLM3_DPO_SPLITS = [("llama_3.1_tulu_3_8b_preference_mixture_no_think", 0.5),
                      ("tulu_3_8b_pref_mix_Qwen3_32B_Qwen3_0.6B_think", 0.25)]
CAI_SFT = {**model("mistralai/Mistral-7B-v0.1"), "chat_template": HANDBOOK_TEMPLATE, "dataset_num_proc": 12,
           **SFT_2024, "do_train": True, "gradient_accumulation_steps": 4,
           "hub_model_id": "mistral-7b-sft-constitutional-ai", "learning_rate": 2.0e-05, "max_seq_length": 2048,
           "num_train_epochs": 1, "output_dir": "data/mistral-7b-sft-constitutional-ai",
           "per_device_eval_batch_size": 8,
           "per_device_train_batch_size": 8, "report_to": ["tensorboard"], "save_strategy": "steps", "save_steps": 100,
           "save_total_limit": 1}
SCAN = {"torch_dtype": None, "dataset_num_proc": 12, **{k: v for k, v in DPO_2024.items() if k != "max_length"},
        "beta": 0.01, "loss_type": "sigmoid", "gradient_accumulation_steps": 2, "learning_rate": 5.0e-7,
        "num_train_epochs": 1, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
        "save_strategy": "steps", "save_steps": 100, "save_total_limit": 1}
del SCAN["log_level"], SCAN["push_to_hub"]
SMOLLM2_SFT = {**model("HuggingFaceTB/SmolLM2-1.7B"), "chat_template": SMOL_SYSTEM,
               "dataset_name": "HuggingFaceTB/smoltalk", "dataset_config": "all", "dataset_train_split": "train",
               "dataset_test_split": "test", "dataset_num_proc": 24, **SFT_2024, "gradient_accumulation_steps": 4,
               "hub_model_id": "smollm2-1.7B-sft", "learning_rate": 3.0e-04, "max_seq_length": 8192,
               "num_train_epochs": 2, "output_dir": "data/smollm2-1.7B-sft", "per_device_eval_batch_size": 4,
               "per_device_train_batch_size": 4, **BOARDS, **NO_SAVE}
SMOLLM2_DPO = {**model("loubnabnl/smollm2-1.7B-sft", revision=None, flash=False),
               "dataset_mixture": mixture(both("HuggingFaceH4/ultrafeedback_binarized", PAIRS, kind="prefs"), 2000),
               "dataset_num_proc": 12, **DPO_2024, "beta": 0.5, "hub_private_repo": True,
               "gradient_accumulation_steps": 8, "hub_model_id": "smollm2-1.7B-dpo", "learning_rate": 1.0e-6,
               "num_train_epochs": 3, "output_dir": "data/smollm2-1.7B-dpo", "per_device_train_batch_size": 2,
               "per_device_eval_batch_size": 4, **BOARDS, **NO_SAVE}

NEW = {
    "constitutional-ai/sft/config_anthropic.yaml": ("sft", {
        **CAI_SFT, "dataset_mixture": mixture([entry("HuggingFaceH4/cai-conversation-harmless", "train_sft", MESSAGES),
                                               entry("HuggingFaceH4/ultrachat_200k", "test_sft", MESSAGES)], 1000)}),
    "constitutional-ai/sft/config_grok.yaml": ("sft", {
        **CAI_SFT, "dataset_mixture": mixture([entry("HuggingFaceH4/grok-conversation-harmless", "train_sft", MESSAGES),
                                               entry("HuggingFaceH4/ultrachat_200k", "test_sft", MESSAGES)], 1000)}),
    "constitutional-ai/dpo/config_anthropic.yaml": ("dpo", {
        "model_name_or_path": "alignment-handbook/mistral-7b-sft-constitutional-ai", "torch_dtype": None,
        "dataset_mixture": mixture(both("HuggingFaceH4/ultrafeedback_binarized", PAIRS, kind="prefs")
                                   + both("HuggingFaceH4/cai-conversation-harmless", PAIRS, kind="prefs"), 3000),
        "dataset_num_proc": 12, **{k: v for k, v in DPO_2024.items() if k != "gradient_checkpointing_kwargs"},
        "beta": 0.1, "do_train": True, "eval_steps": 1000, "gradient_accumulation_steps": 1,
        "hub_model_id": "mistral-7b-dpo-constitutional-ai", "learning_rate": 5.0e-7, "lr_scheduler_type": "linear",
        "num_train_epochs": 3, "optim": "rmsprop", "output_dir": "data/mistral-7b-dpo-constitutional-ai",
        "per_device_train_batch_size": 2, "per_device_eval_batch_size": 8, "save_strategy": "steps",
        "save_steps": 100, "save_total_limit": 1}),
    "pref_align_scan/dpo/config_openhermes.yaml": ("dpo", {
        "model_name_or_path": "teknium/OpenHermes-2.5-Mistral-7B", **SCAN, "do_train": True,
        "dataset_mixture": mixture(both("HuggingFaceH4/orca_dpo_pairs", PAIRS, kind="prefs"), 500),
        "hub_model_id": "HuggingFaceH4/openhermes-2.5-mistral-7b-dpo", "hub_model_revision": "v1.0",
        "output_dir": "data/openhermes-2.5-mistral-7b-dpo-v1.0"}),
    "pref_align_scan/dpo/config_zephyr.yaml": ("dpo", {
        "model_name_or_path": "alignment-handbook/zephyr-7b-sft-full", **SCAN,
        "dataset_mixture": mixture(both("HuggingFaceH4/ultrafeedback_binarized", PAIRS, kind="prefs"), 2000),
        "hub_model_id": "zephyr-7b-align-scan", "hub_model_revision": "dpo-beta-0.01",
        "output_dir": "data/zephyr-7b-align-scan-dpo-beta-0.01"}),
    "smollm/sft/config.yaml": ("sft", {
        **model("HuggingFaceTB/SmolLM-360M"), "chat_template": CHATML,
        "dataset_mixture": mixture(
            both("HuggingFaceTB/Magpie-Pro-300K-Filtered-H4", MESSAGES) + both("HuggingFaceTB/self-oss-instruct-sc2-H4",
                                                                              MESSAGES)
            + both("HuggingFaceTB/OpenHermes-2.5-H4", MESSAGES, 0.001)
            + both("HuggingFaceTB/everyday-conversations-llama3.1-2k", MESSAGES)
            + both("HuggingFaceTB/instruct-data-basics-smollm-H4", MESSAGES), 0.05),
        "dataset_num_proc": 24, **SFT_2024, **SKIP_SPECIALS, "gradient_accumulation_steps": 4,
        "hub_model_id": "smollm-360M-instruct-new", "learning_rate": 1.0e-03, "max_seq_length": 2048,
        "num_train_epochs": 1, "output_dir": "data/smollm-360M-instruct-new", "per_device_eval_batch_size": 4,
        "per_device_train_batch_size": 4, **BOARDS, **NO_SAVE}),
    "smollm2/sft/config.yaml": ("sft", SMOLLM2_SFT),
    "smollm2/sft/config_smol.yaml": ("sft", {
        **{k: v for k, v in SMOLLM2_SFT.items() if k != "dataset_config"},
        "model_name_or_path": "HuggingFaceTB/SmolLM2-360M", "dataset_name": "HuggingFaceTB/smol-smoltalk",
        "hub_model_id": "smollm2-360M-sft", "learning_rate": 1.0e-03, "output_dir": "data/smollm2-360M-sft"}),
    "smollm2/dpo/config.yaml": ("dpo", SMOLLM2_DPO),
    "smollm2/dpo/config_smol.yaml": ("dpo", {
        **SMOLLM2_DPO, "model_name_or_path": "loubnabnl/smollm2-360M-sft", "hub_model_id": "smollm2-360M-dpo",
        "num_train_epochs": 2, "output_dir": "data/smollm2-360M-dpo"}),
    "smollm3/sft/mid.yaml": ("sft", {
        **model("HuggingFaceTB/SmolLM3-3B-Base", remote=True), "chat_template": MID,
        "dataset_mixture": mixture([entry("HuggingFaceTB/smoltalk2", s, MESSAGES, config="Mid") for s in
                                    ("Llama_Nemotron_Post_Training_Dataset_reasoning_r1", "OpenThoughts3_1.2M")], None),
        "dataset_num_proc": 48, "eos_token": "<|im_end|>", **SMOLLM3_SCHEDULE, "ddp_timeout": 14400,
        "output_dir": "data/SmolLM3-Mid", "learning_rate": 2.0e-05, "packing": True, "max_steps": -1,
        "max_length": 32768,
        "num_train_epochs": 5, "save_strategy": "steps", "save_steps": 0.05, "save_total_limit": 1,
        "warmup_ratio": 0.03, "run_name": "smollm3-midtraining", "average_tokens_across_devices": True}),
    "smollm3/sft/sft.yaml": ("sft", {
        **model("HuggingFaceTB/SmolLM3-3B-checkpoints", revision="it-mid-training", remote=True),
        "chat_template": SMOLLM3,
        "dataset_mixture": mixture([entry("HuggingFaceTB/smoltalk2", s, MESSAGES + ["chat_template_kwargs"], w, "SFT")
                                    for s, w in SMOLLM3_SFT_SPLITS], None),
        "dataset_num_proc": 12, "eos_token": "<|im_end|>", "assistant_only_loss": True, **SMOLLM3_SCHEDULE,
        "ddp_timeout": 18000, "output_dir": "data/SmolLM3-SFT", "learning_rate": 2.0e-05, "packing": True,
        "max_steps": -1,
        "packing_strategy": "ffd", "max_length": 65536, "num_train_epochs": 5, "save_strategy": "epoch",
        "save_total_limit": 1, "warmup_ratio": 0.03, "run_name": "smollm3-sft-training",
        "average_tokens_across_devices": True}),
    "smollm3/dpo/apo.yaml": ("dpo", {
        **model("HuggingFaceTB/SmolLM3-3B-checkpoints", revision="it-SFT", remote=True),
        "dataset_mixture": mixture([entry("HuggingFaceTB/smoltalk2", s, PROMPT_PAIRS + ["chat_template_kwargs"], w,
                                          "Preference") for s, w in SMOLLM3_DPO_SPLITS], None, seed=None),
        "dataset_num_proc": 12, **SMOLLM3_SCHEDULE, "output_dir": "data/SmolLM3-DPO", "run_name": "SmolLM3-DPO",
        "learning_rate": 1.0e-06, "beta": 0.05, "loss_type": "apo_zero", "max_length": 24576, "num_train_epochs": 1,
        "padding_free": True, "save_strategy": "steps", "save_steps": 0.5, "save_total_limit": 1,
        "warmup_ratio": 0.1}),
    "starchat2-15b/sft/config_v0.1.yaml": ("sft", {
        **model("bigcode/starcoder2-15b"), "chat_template": STARCHAT,
        "dataset_mixture": mixture(
            [entry(f"HuggingFaceH4/{d}", "train_sft", MESSAGES) for d in
             ("airoboros-3.2", "Code-Feedback", "orca-math-word-problems-200k", "SystemChat", "capybara")]
            + [entry(f"HuggingFaceH4/{d}", "test_sft", MESSAGES) for d in
               ("airoboros-3.2", "Code-Feedback", "orca-math-word-problems-200k", "SystemChat", "capybara")], 1000),
        "dataset_num_proc": 24, **SFT_2024, "gradient_accumulation_steps": 2, "hub_model_id": "starchat2-15b-v0.1",
        "learning_rate": 2.0e-05, "max_seq_length": 2048, "num_train_epochs": 3,
        "output_dir": "data/starchat2-15b-v0.1", "per_device_eval_batch_size": 8, "per_device_train_batch_size": 8,
        **BOARDS, **NO_SAVE}),
    "starchat2-15b/dpo/config_v0.1.yaml": ("dpo", {
        **model("HuggingFaceH4/starchat2-15b-sft-v0.1", revision=None, flash=False),
        "dataset_mixture": mixture([entry(d, s, PAIRS) for s in ("train_prefs", "test_prefs") for d in
                                    ("HuggingFaceH4/ultrafeedback_binarized", "HuggingFaceH4/orca_dpo_pairs")], 2000),
        "dataset_num_proc": 12, **DPO_2024, "beta": 0.05, "gradient_accumulation_steps": 8,
        "hub_model_id": "starchat2-15b-dpo-v0.1", "learning_rate": 5.0e-7, "num_train_epochs": 2,
        "output_dir": "data/starchat2-15b-dpo-v0.1", "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4, **BOARDS, **NO_SAVE}),
    "zephyr-141b-A35b/orpo/config_full.yaml": ("orpo", {
        **model("mistral-community/Mixtral-8x22B-v0.1"), "chat_template": HANDBOOK_TEMPLATE,
        "dataset_name": "argilla/distilabel-capybara-dpo-7k-binarized", "dataset_train_split": "train",
        "dataset_num_proc": 8, "bf16": True, "beta": 0.05, "gradient_accumulation_steps": 1, **GC_REENTRANT,
        "hub_model_id": "zephyr-orpo-141b-A35b", "learning_rate": 5.0e-6, "log_level": "info", "logging_steps": 10,
        "lr_scheduler_type": "inverse_sqrt", "max_length": 2048, "max_prompt_length": 1792, "num_train_epochs": 3,
        "optim": "adamw_bnb_8bit", "output_dir": "data/zephyr-orpo-141b-A35b", "per_device_train_batch_size": 1,
        "push_to_hub": True, **BOARDS, **NO_SAVE, "seed": 42, "warmup_steps": 100}),
    "zephyr-7b-gemma/sft/config_full.yaml": ("sft", {
        **model("google/gemma-7b"), "chat_template": GEMMA,
        "dataset_mixture": mixture(both("HuggingFaceH4/deita-10k-v0-sft", MESSAGES), 1000),
        "dataset_num_proc": 12, **SFT_2024, **SKIP_SPECIALS, "gradient_accumulation_steps": 4,
        "hub_model_id": "zephyr-7b-gemma-sft", "learning_rate": 2.0e-05, "max_seq_length": 2048,
        "num_train_epochs": 3, "output_dir": "data/zephyr-7b-gemma-sft", "per_device_eval_batch_size": 4,
        "per_device_train_batch_size": 4, **BOARDS, **NO_SAVE}),
    "zephyr-7b-gemma/dpo/config_full.yaml": ("dpo", {
        **model("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", revision=None, flash=False),
        "dataset_mixture": mixture([entry("argilla/dpo-mix-7k", s, PAIRS) for s in ("train", "test")], 500),
        "dataset_num_proc": 12, **DPO_2024, "beta": 0.05, "gradient_accumulation_steps": 8,
        "hub_model_id": "zephyr-7b-gemma-dpo", "learning_rate": 5.0e-7, "num_train_epochs": 2,
        "output_dir": "data/zephyr-7b-gemma-dpo", "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4,
        **BOARDS, **NO_SAVE}),
}
CATALOG: dict[str, tuple[str, dict]] = {
    **{f"zephyr-7b-beta/{name}": (name.split("/")[0], config) for name, config in PUBLISHED.items()}, **NEW}

ROWS_PER_SPLIT = 12  # each listed split of each dataset gets its own slice of the bundled samples


def _sample(name: str) -> list[dict]:
    from zephyr_train.data import builtin

    folder = builtin.dataset_dir(name)
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _rows(columns: list[str], offset: int) -> list[dict]:
    """Rows of the listed columns from the bundled samples: conversations, or pairs (with the prompt as text);
    `chat_template_kwargs` as SmolLM3's rows carry it (thinking on for every other row)."""
    pairs = "chosen" in columns
    sample = _sample("ultrafeedback-sample" if pairs else "ultrachat-sample")[offset:offset + ROWS_PER_SPLIT]
    rows = []
    for i, row in enumerate(sample):
        out = {"chosen": row["chosen"], "rejected": row["rejected"]} if pairs else {"messages": row["messages"]}
        if "prompt" in columns:
            out["prompt"] = row["chosen"][0]["content"]  # a prompt column beside whole conversations
        if "chat_template_kwargs" in columns:
            out["chat_template_kwargs"] = {"enable_thinking": i % 2 == 0}
        rows.append(out)
    return rows


def write_local(folder: Path, dataset: str, splits: dict[str, list[str]]) -> str:
    """A local copy of DATASET: one `{split}.jsonl` per split, each from a different slice of the samples (so
    train and held-out prompts differ)."""
    target = folder / dataset.replace("/", "__")
    target.mkdir(parents=True, exist_ok=True)
    for split, columns in splits.items():
        offset = zlib.crc32(split.encode()) % 100 * ROWS_PER_SPLIT  # a slice per split name
        (target / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(columns, offset)) + "\n")
    return str(target)


def _splits(config: dict) -> dict[str, dict[str, list[str]]]:
    """{dataset id: {split: columns}} a config reads."""
    found: dict[str, dict[str, list[str]]] = {}
    for d in (config.get("dataset_mixture") or {}).get("datasets", []):
        found.setdefault(d["id"], {})[d["split"]] = d.get("columns") or MESSAGES
    if "dataset_name" in config:
        for key in ("dataset_train_split", "dataset_test_split"):
            if key in config:
                found.setdefault(config["dataset_name"], {})[config[key]] = MESSAGES
    for dataset in config.get("dataset_mixer") or {}:
        found.setdefault(dataset, {}).update({s: MESSAGES for s in config.get("dataset_splits", [])})
    return found


def on_machine(name: str, data: Path, model: str = "builtin:tiny-mistral", output_dir: str = "out",
               steps: int = 1) -> tuple[str, dict]:
    """(stage, config) for a published config on this CPU box, offline: what it cannot honour changed (model and
    its revision, dataset ids -> local copies, flash_attention_2 -> sdpa, bf16 -> fp32, the model's own
    `<|im_end|>` eos token -> the tiny model's, the CUDA-only paged AdamW -> AdamW), sized down (steps, batch,
    lengths, one data worker, no Hub push or tracker). Every other key stays as published."""
    stage, config = CATALOG[name]
    config = copy.deepcopy(config)
    config["model_name_or_path"] = model
    config.pop("model_revision", None)
    if config.get("attn_implementation") == "flash_attention_2":
        config["attn_implementation"] = "sdpa"
    if config.get("torch_dtype") == "bfloat16":
        config["torch_dtype"] = "float32"
    if config.get("eos_token"):
        config["eos_token"] = "</s>"
    if config.get("optim") == "paged_adamw_32bit":  # bitsandbytes' 8-bit AdamW runs on a CPU, its paged ones not
        config["optim"] = "adamw_torch"
    columns = PAIRS if stage != "sft" else MESSAGES
    local = {}
    for dataset, splits in _splits(config).items():
        local[dataset] = write_local(data, dataset, {s: (c if c != MESSAGES else columns) for s, c in splits.items()})
    for d in (config.get("dataset_mixture") or {}).get("datasets", []):
        d["id"] = local[d["id"]]
    if isinstance((config.get("dataset_mixture") or {}).get("test_split_size"), int):
        config["dataset_mixture"]["test_split_size"] = 4  # rows, out of the local copies' few
    if "dataset_name" in config:
        config["dataset_name"] = local[config["dataset_name"]]
    if "dataset_mixer" in config:
        config["dataset_mixer"] = {local[k]: v for k, v in config["dataset_mixer"].items()}
    config.update(bf16=False, max_steps=steps, per_device_train_batch_size=2, per_device_eval_batch_size=4,
                  gradient_accumulation_steps=1, push_to_hub=False, report_to=["none"], dataset_num_proc=1,
                  output_dir=output_dir)
    config["max_seq_length" if "max_seq_length" in config else "max_length"] = 128
    if "max_prompt_length" in config:
        config["max_prompt_length"] = 64
    return stage, config
