"""alignment-handbook configs, run as they are: `zephyr-train sft --config config_full.yaml`.

A handbook config is one flat mapping per stage: TRL's `ModelConfig` keys (`model_name_or_path`,
`torch_dtype`, `use_peft`, `lora_r`, `load_in_4bit`, ...), its data keys (`dataset_mixer` with
`dataset_splits`, or the newer `dataset_mixture`), `chat_template`, and the trainer config's fields.
It is turned into a one-stage recipe; keys older TRL releases used are mapped with a warning, keys
with no meaning here are dropped with a warning, and anything else goes through the recipe's checks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import RENAMED_FIELDS, apply_override, read_yaml
from zephyr_train.data import builtin
from zephyr_train.data.chat_template import renders_like_zephyr
from zephyr_train.data.sources import is_builtin
from zephyr_train.errors import UserError
from zephyr_train.preflight import launcher
from zephyr_train.stages import KINDS, build_recipe

MODEL_KEYS = {"model_name_or_path": "name_or_path", "model_revision": "revision", "torch_dtype": "dtype",
              "dtype": "dtype", "attn_implementation": "attn_implementation", "trust_remote_code": "trust_remote_code"}
QUANT_KEYS = {"load_in_4bit": "load_in_4bit", "load_in_8bit": "load_in_8bit",
              "bnb_4bit_quant_type": "bnb_4bit_quant_type", "use_bnb_nested_quant": "bnb_4bit_use_double_quant",
              "bnb_4bit_quant_storage": "bnb_4bit_quant_storage"}
LORA_KEYS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules",
             "lora_modules_to_save": "modules_to_save",
             "use_dora": "use_dora", "use_rslora": "use_rslora"}  # PEFT LoraConfig fields, same names
# Keys with no effect here: the handbook's own plumbing or settings TRL 1.16 dropped.
IGNORED = {"overwrite_output_dir", "dataset_configs", "truncation_side", "auto_insert_empty_system_msg", "use_peft",
           "text_column", "lora_task_type", "bnb_4bit_compute_dtype"}
# The handbook's own spellings of trainer fields, and values TRL renamed since the configs were written.
HANDBOOK_RENAMED = {"hub_model_revision": "hub_revision"}
RENAMED_VALUES = {"packing_strategy": ("ffd", "bfd")}  # TRL renamed it: the algorithm was best-fit decreasing
MARKERS = re.compile(r"{%-?\s*generation\s*-?%}")


def _carved(size: Any, seed: Any, source: str) -> dict | None:
    """`test_split_size` as `datasets`' `train_test_split` reads it: an int is rows, a float below 1 a share."""
    if size is None or size == 0:
        return None
    if isinstance(size, bool) or not isinstance(size, int | float) or size < 0:
        raise UserError(f"{source}: dataset_mixture.test_split_size must be a number of rows (e.g. 1000) or a "
                        f"fraction below 1 (e.g. 0.05), got {size!r}")
    if isinstance(size, float) and size < 1:
        return {"fraction": size, "seed": seed}
    if size != int(size):
        raise UserError(f"{source}: dataset_mixture.test_split_size {size} is neither a fraction below 1 nor a "
                        "whole number of rows")
    return {"rows": int(size), "seed": seed}


def _held_out(datasets: list[dict], tests: list[dict], carved: dict | None, source: str,
              warnings: list[str]) -> dict | None:
    """The eval set when the mixture lists official test splits (which it would train on): the test split of
    the training datasets when each of them lists the same one, else `test_split_size` carved from the mix;
    a test split of a dataset not otherwise trained on is left out. One warning says which."""
    trained = {(d["path"], d["name"]) for d in datasets}
    own = [t for t in tests if (t["path"], t["name"]) in trained]
    names = {t["split"] for t in own}
    listed = ", ".join(f"{t['split']} of {t['path']}" for t in tests)
    size = f" and test_split_size {carved.get('rows') or carved.get('fraction'):g} carved from the mix" \
        if carved else ""
    if len(names) == 1 and {(t["path"], t["name"]) for t in own} == trained:
        split = names.pop()
        others = [t for t in tests if t not in own]
        dropped = f"; {', '.join(t['path'] for t in others)} not trained on (no training split)" if others else ""
        warnings.append(f"{source}: dataset_mixture trains on the official test split {listed}{size}, so test rows "
                        f"would be trained on; {split} is the eval set instead, not trained on{dropped}")
        return {"split": split}
    warnings.append(f"{source}: dataset_mixture trains on the official test split {listed}{size}; test splits are "
                    f"never trained on here and not every training dataset lists one, so they are left out and the "
                    f"eval set is {'carved from the mix as published' if carved else 'none'}")
    return carved


def _mixture(raw: dict, stage: str, source: str, warnings: list[str]) -> tuple[list[dict], dict | None]:
    """(datasets, eval) from the newer `dataset_mixture`. A dataset id may be listed several times (splits,
    configs); each entry is one part of the mixture. Its `test_split_size` goes to `datasets`'
    `train_test_split` (`eval.rows` / `eval.fraction`); official test splits listed among the training datasets
    (the published full configs list test_sft / test_prefs, then carve the eval set out of the mix, so test
    rows are trained on) become the eval split instead (`_held_out`)."""
    mixture = raw.pop("dataset_mixture") or {}
    entries = mixture.get("datasets") if isinstance(mixture, dict) else None
    if not isinstance(entries, list) or not entries or not all(isinstance(d, dict) and d.get("id") for d in entries):
        raise UserError(f"{source}: dataset_mixture.datasets must list datasets, each with an id (and split, weight)")
    train_split = KINDS[stage].train_split
    datasets, tests = [], []
    for d in entries:
        split = str(d.get("split", train_split))
        (tests if "test" in split.lower() else datasets).append(
            {"path": d["id"], "name": d.get("config"), "split": split, "weight": float(d.get("weight", 1.0))})
    if not datasets:
        raise UserError(f"{source}: dataset_mixture lists only test splits ({', '.join(t['split'] for t in tests)}); "
                        f"add a training split such as {train_split}")
    carved = _carved(mixture.get("test_split_size"), mixture.get("seed", 42), source)
    return datasets, (_held_out(datasets, tests, carved, source, warnings) if tests else carved)


def _datasets(raw: dict, stage: str, source: str, warnings: list[str]) -> tuple[list[dict], dict | None]:
    """(datasets, eval) from `dataset_mixer` + `dataset_splits` (2024 recipes), `dataset_mixture`, or
    `dataset_name`."""
    default = [KINDS[stage].train_split, KINDS[stage].eval_split]
    splits = raw.pop("dataset_splits", None) or default
    train = next((s for s in splits if "train" in s), splits[0])
    test = next((s for s in splits if "test" in s), None)
    if "dataset_mixer" in raw:
        mixer = raw.pop("dataset_mixer") or {}
        return [{"path": path, "split": train, "weight": float(weight)} for path, weight in mixer.items()], \
            ({"split": test} if test else None)
    if "dataset_mixture" in raw:
        return _mixture(raw, stage, source, warnings)
    if "dataset_name" in raw:  # TRL's ScriptArguments: no eval set unless dataset_test_split names one
        train = raw.pop("dataset_train_split", KINDS[stage].train_split)
        test = raw.pop("dataset_test_split", None)
        return [{"path": raw.pop("dataset_name"), "name": raw.pop("dataset_config", None), "split": train}], \
            ({"split": test} if test else None)
    raise UserError(f"{source}: no dataset_mixer, dataset_mixture or dataset_name; a handbook config names its data")


def _template(raw: dict, stage: str, source: str, section: dict, warnings: list[str]) -> str | None:
    """The config's `chat_template`: the public Zephyr one becomes `zephyr` (its training twin marks the
    replies); any other without `{% generation %}` markers trains on whole conversations, as the handbook's
    SFT did (TRL's default), unless the config sets assistant_only_loss itself."""
    template = raw.pop("chat_template", None)
    if template is not None and renders_like_zephyr(template):
        return "zephyr"
    if template is not None and not MARKERS.search(template) and "assistant_only_loss" not in raw \
            and KINDS[stage].defaults.get("assistant_only_loss"):  # SFT's default would need the markers
        section["assistant_only_loss"] = False
        warnings.append(f"{source}: its chat_template has no {{% generation %}} markers; training on whole "
                        "conversations (assistant_only_loss=false), as the handbook did")
    return template


def _trainer_keys(raw: dict, stage: str, source: str, warnings: list[str]) -> None:
    """Trainer keys renamed since the config was written, read under today's name (a warning each); keys
    with no effect here dropped (a warning each)."""
    for key in list(raw):
        if key in RENAMED_FIELDS or key in HANDBOOK_RENAMED:
            new = RENAMED_FIELDS.get(key) or HANDBOOK_RENAMED[key]
            warnings.append(f"{source}: {key} is now {new}; read as {new}")
            raw[new] = raw.pop(key)
        elif key in IGNORED or (key == "max_prompt_length" and not KINDS[stage].has_option(key)):
            warnings.append(f"{source}: {key} has no effect with TRL 1.16 here; ignored")
            raw.pop(key)
    for key, (old, new) in RENAMED_VALUES.items():
        if raw.get(key) == old:
            warnings.append(f"{source}: {key}: {old} is now {new} in TRL 1.16; read as {new}")
            raw[key] = new


def _eos_token(recipe: dict, stage: str, source: str) -> None:
    """SmolLM3's `eos_token: <|im_end|>` names a token of its own tokenizer. With a model whose tokenizer is on
    disk (built-in, local), a token it lacks is one line now; TRL would stop on it after loading the model."""
    token, name = recipe[stage].get("eos_token"), str(recipe["model"].get("name_or_path", ""))
    if not token:
        return
    try:
        file = (builtin.model_dir(name) if is_builtin(name) else Path(name).expanduser()) / "tokenizer.json"
    except KeyError:  # an unknown built-in: build_recipe names it
        return
    if not file.is_file():
        return  # a Hub model: TRL checks it once the tokenizer is there
    data = json.loads(file.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab") or {}
    known = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
    if token not in known | {t.get("content") for t in data.get("added_tokens", [])}:
        raise UserError(f"{source}: eos_token {token!r} is not in {name}'s tokenizer; pass {stage}.eos_token= with its "
                        "end-of-turn token (e.g. </s>), or a model whose tokenizer has it")


def to_recipe(raw: dict, stage: str, source: str) -> tuple[dict, list[str]]:
    """The recipe mapping for a handbook config of `stage`, and the warnings for what was mapped or dropped."""
    raw, warnings = dict(raw), []
    model = {ours: raw.pop(key) for key, ours in MODEL_KEYS.items() if key in raw}
    model = {key: value for key, value in model.items() if value is not None}  # `torch_dtype: null` is auto
    if raw.pop("use_flash_attention_2", False):
        model["attn_implementation"] = "flash_attention_2"
    quant = {ours: raw.pop(key) for key, ours in QUANT_KEYS.items() if key in raw}
    if quant.get("load_in_4bit") or quant.get("load_in_8bit"):
        quant["bnb_4bit_compute_dtype"] = model.get("dtype") if model.get("dtype") not in (None, "auto") else "bfloat16"
        model["quantization"] = quant
    section: dict[str, Any] = {}
    lora = {ours: raw.pop(key) for key, ours in LORA_KEYS.items() if key in raw}
    if raw.pop("use_peft", False):
        section["lora"] = {"target_modules": ["q_proj", "v_proj"], **lora}  # PEFT's default for Mistral/Llama
    datasets, evaluation = _datasets(raw, stage, source, warnings)
    section["datasets"] = datasets
    if evaluation:
        section["eval"] = evaluation
    template = _template(raw, stage, source, section, warnings)
    _trainer_keys(raw, stage, source, warnings)
    # The handbook's output_dir holds the model itself, and the next config's model_name_or_path names it:
    # the stage writes there, not to OUTPUT_DIR/<stage>.
    output_dir = str(raw.pop("output_dir", None) or f"runs/{Path(source).stem}")
    section.update(raw)
    section["output_dir"] = output_dir
    recipe = {"model": model, "output_dir": output_dir, stage: section}
    if template is not None:
        recipe["chat_template"] = template
    return recipe, warnings


def load_handbook(path: str | Path, stage: str, overrides: list[str] = ()) -> Any:
    """A Recipe from a handbook config file; overrides use the recipe's names (sft.learning_rate=...)."""
    path = Path(path)
    raw = read_yaml(path, "config file not found; pass an alignment-handbook config such as config_full.yaml")
    if not isinstance(raw, dict) or "model_name_or_path" not in raw:
        raise UserError(f"{path}: not an alignment-handbook config (no model_name_or_path); pass recipes as RECIPE")
    recipe, warnings = to_recipe(raw, stage, str(path))
    for item in overrides:
        apply_override(recipe, item, path)
    kernel_warning = launcher.liger_kernel(recipe[stage], stage, str(path))
    warnings.extend([kernel_warning] if kernel_warning else [])
    _eos_token(recipe, stage, str(path))
    if launcher.main_process():
        for warning in warnings:
            print(f"zephyr-train: warning: {warning}", file=sys.stderr)
    return build_recipe(recipe, str(path))
