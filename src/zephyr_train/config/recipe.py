"""Recipes: one YAML file per run, validated before anything heavy is imported or loaded.

Layout (see recipes/smoke.yaml): shared `model`, `chat_template` and `output_dir` at the top, then
one section per stage (`sft`, and `dpo` for the next stage). A stage section holds its data mixture
(`datasets`, `eval`), its `lora` settings, the kind's own keys (`StageKind.options`) and every field of
the TRL trainer config under its own name (`learning_rate`, `packing`, ...). Command-line `key=value`
overrides (dotted for nesting) win over the file. Every key is checked against the schema, trainer
fields against the installed TRL.

This module knows no stage kind by name: which sections exist, their defaults and their rules come from
the registry (`stages.KINDS`) handed to `build_recipe`; `stages.load_recipe` is the entry point to use.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zephyr_train.config.evaluation import build_evaluation
from zephyr_train.config.lora import Lora, build_lora
from zephyr_train.config.secrets import redact
from zephyr_train.config.stage_kind import StageKind
from zephyr_train.config.trainer_fields import check_value, coerce
from zephyr_train.errors import UserError
from zephyr_train.run_files import RESOLVED_RECIPE

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class Quantization:
    """bitsandbytes settings; `load_in_4bit` with NF4 is QLoRA."""

    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_compute_dtype: str = "bfloat16"
    bnb_4bit_quant_storage: str | None = None
    bnb_4bit_use_double_quant: bool = False


@dataclass
class ModelSpec:
    name_or_path: str = ""
    revision: str = "main"
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    quantization: Quantization | None = None


@dataclass
class DatasetSpec:
    """One part of the mixture: a Hub id, a directory saved by `datasets`, or data files."""

    path: str = ""
    name: str | None = None
    revision: str | None = None
    split: str = "train"
    weight: float = 1.0
    columns: dict | None = None  # {column we need: column in the source}


@dataclass
class EvalSpec:
    """Where the eval set comes from: a named split of each dataset, or carved from train: `fraction` of
    its rows, or `rows` of them (`datasets`' `train_test_split` reads an int as rows, a float as a share)."""

    split: str | None = None
    fraction: float | None = None
    rows: int | None = None
    seed: int = 42
    max_samples: int | None = None


@dataclass
class Stage:
    """One training stage of a recipe: the section `kind` it was read from, and what that kind declares."""

    spec: StageKind = field(repr=False, compare=False)
    datasets: list[DatasetSpec] = field(default_factory=list)
    eval: EvalSpec | None = None
    lora: Lora | None = None
    options: Any = None  # the kind's own keys (an instance of `spec.options`, e.g. DPO's max_prompt_length)
    trainer: dict[str, Any] = field(default_factory=dict)  # TRL config fields, by their TRL names

    @property
    def kind(self) -> str:
        return self.spec.name

    def setting(self, name: str) -> Any:
        """The value the trainer will use for a TRL config field: the recipe's, else the installed TRL's
        default (read from its source, never retyped here)."""
        value = self.trainer.get(name)
        return self.spec.fields()[name].default if value is None else value


@dataclass
class Hub:
    """Where `hub.push_stage` puts each stage's result; see hub.py for the repos a run fills."""

    repo_id: str = ""  # the final (DPO) model; SFT goes to sft_repo_id, merged LoRA models to <repo>-merged
    sft_repo_id: str | None = None  # default: <repo_id>-sft
    private: bool = True
    revision: str = "main"  # branch to push to, created if missing
    strategy: str = "end"  # end: once per stage; every_save: also each checkpoint as it is saved
    license: str = "apache-2.0"  # the model card's license (Mistral-7B's; zephyr-7b-beta used mit)


@dataclass
class Recipe:
    model: ModelSpec
    kinds: Mapping[str, StageKind] = field(repr=False, compare=False)  # the registry it was read with, in run order
    chat_template: str = "auto"  # the tokenizer's own (Zephyr's for a template-less base); see data/chat_template.py
    output_dir: str = "runs/default"
    sections: dict[str, Stage] = field(default_factory=dict)  # its stage sections, by kind, in run order
    patches: bool = True  # false: every TRL patch off, plain TRL (train/patches/), to compare in one run
    hub: Hub | None = None
    eval: Any = None  # config.evaluation.Evaluation: the run's last stage (benchmarks), when the recipe has one
    launch: dict | None = None  # how it is meant to be launched: {accelerate_config, gpus}; read by preflight/intended
    source: str = "<recipe>"  # the file it came from, for error messages

    def stage(self, kind: str) -> Stage | None:
        """The section of this kind, None when the recipe has none (e.g. a DPO-only recipe's sft)."""
        if kind not in self.kinds:
            raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join(self.kinds)}")
        return self.sections.get(kind)

    @property
    def stages(self) -> list[Stage]:
        """The recipe's stages in the order a run trains them (the registry's order)."""
        return [self.sections[kind] for kind in self.kinds if kind in self.sections]

    def upstream(self, kind: str) -> Stage | None:
        """The section whose result stage `kind` starts from (DPO: the SFT section), None to start from the model."""
        before = self.kinds[kind].starts_from
        return self.sections.get(before) if before else None

    def stage_dir(self, kind: str) -> Path:
        section = self.stage(kind)  # None for a DPO-only recipe asking where SFT would be
        return Path((section.trainer.get("output_dir") if section else None) or Path(self.output_dir) / kind)


# Our defaults for every stage where TRL's are wrong for these users (a kind adds its own in
# `StageKind.defaults`); each is written into the resolved recipe.
COMMON_DEFAULTS: dict[str, Any] = {
    "activation_checkpointing": False,  # costs ~30% speed; turn on when memory needs it
    "bf16": False,  # precision is what the recipe says: fp32 unless bf16/fp16 is asked for
    "report_to": "none",
    "logging_steps": 10,
    "logging_first_step": True,  # so the summary's first loss is step 1's, not a 10-step mean
    "seed": 42,
}

# transformers 5 renamed these; the old names (used by the public recipes) still mean the same.
ALIASES = {"gradient_checkpointing": "activation_checkpointing",
           "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}
# Trainer fields we set ourselves from other recipe keys.
_OWNED_FIELDS = {"model_init_kwargs": "model", "chat_template_path": "chat_template"}


# --- loading ---------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str], kinds: Mapping[str, StageKind]) -> Recipe:
    """Parse, override and validate a recipe file with the stage kinds of `kinds` (`stages.load_recipe` passes
    the registry); every problem is a one-line UserError."""
    path = Path(path)
    raw = read_yaml(path, "recipe file not found; pass a YAML file such as recipes/smoke.yaml")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a mapping of keys (model, sft, ...), got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, path)
    return build_recipe(raw, str(path), kinds)


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's content; a missing file (`missing` says what to give) or bad YAML is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None


def apply_override(raw: dict, item: str, source: Path | str) -> None:
    """`a.b=value`, `sft.datasets.0.weight=0.5`: the value is read as YAML, so numbers, booleans and
    lists keep their types (text that is not valid YAML stays text)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {item!r}: write overrides as key=value, e.g. sft.learning_rate=1e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node: Any = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"override {item!r}: {'.'.join(parts[:depth])} is a list of {len(node)}; "
                                f"index it from 0, e.g. {'.'.join(parts[:depth])}.0.{'.'.join(parts[depth + 1:])}")
            part = int(part)
        elif not isinstance(node, dict):
            raise UserError(f"override {item!r}: {'.'.join(parts[:depth])} is not a section in {source}")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


# Keys that older TRL/transformers releases (and the public recipes) use, with today's spelling.
# Trainer fields that older TRL/transformers releases spelled otherwise: the one table of renamed keys
# (a recipe names the new key in its error; a handbook config is read with the new key and a warning).
RENAMED_FIELDS = {
    "warmup_ratio": "warmup_steps",  # transformers 5: a value below 1 is a ratio of the total steps
    "max_seq_length": "max_length",
    "evaluation_strategy": "eval_strategy",
    "preprocessing_num_workers": "dataset_num_proc",
}
RENAMED = {**RENAMED_FIELDS, "warmup_ratio": "warmup_steps (a value below 1 is a ratio of the total steps)",
           "torch_dtype": "model.dtype", "model_name_or_path": "model.name_or_path"}


def _unknown(source: str, where: str, key: str, valid: list[str], owners: list[str] = ()) -> UserError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if owners:  # another kind's key (DPO's reference settings in an orpo section)
        hint = f"it is a setting of {'/'.join(owners)}, not of {where.rstrip('.')}; " + (
            f"did you mean {close[0]!r}?" if close else f"did you mean to put it in the {owners[0]} section?")
    elif key in RENAMED:
        hint = f"it is now {RENAMED[key]}"
    else:
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return UserError(f"{source}: unknown key '{where}{key}'; {hint}")


def build_section(cls: type, raw: Any, source: str, where: str) -> Any:
    """A dataclass from a mapping, each value coerced to the field's annotated type."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where.rstrip('.')} must be a mapping of keys, got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise _unknown(source, where, str(key), list(known))
        annotation = str(known[key].type)
        nested = {"Quantization": Quantization, "EvalSpec": EvalSpec}.get(annotation.split(" |")[0])
        if nested and value is not None:
            values[key] = build_section(nested, value, source, f"{where}{key}.")
            continue
        try:
            values[key] = coerce(value, annotation)
        except ValueError as err:
            raise UserError(f"{source}: {where}{key} {err}") from None
    return cls(**values)


def _build_stage(kind: StageKind, raw: Any, source: str, kinds: Mapping[str, StageKind] | None = None) -> Stage:
    name = kind.name
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {name} must be a mapping (datasets, lora, trainer fields), got {raw!r}")
    fields = kind.fields()
    options = {f.name for f in dataclasses.fields(kind.options)} if kind.options else set()
    own = {"datasets", "eval", "lora"} | options
    stage = Stage(spec=kind, trainer={**COMMON_DEFAULTS, **kind.defaults})
    for key, value in raw.items():
        if key in own:
            continue
        if key in _OWNED_FIELDS:
            raise UserError(f"{source}: {name}.{key} is set from the recipe's {_OWNED_FIELDS[key]} section; "
                            f"remove it and edit {_OWNED_FIELDS[key]} instead")
        if key not in fields:
            raise _unknown(source, f"{name}.", str(key), list(fields) + sorted(own), kind.owners(str(key), kinds or {}))
        try:
            value = check_value(fields[key], value)  # as TRL's dataclass and its __post_init__ take it
        except ValueError as err:
            raise UserError(f"{source}: {name}.{key} {err}") from None
        stage.trainer[ALIASES.get(key, key)] = value
    datasets = raw.get("datasets") or []
    if not isinstance(datasets, list) or not datasets:
        raise UserError(f"{source}: {name}.datasets must list at least one dataset (path, split, weight)")
    stage.datasets = [build_section(DatasetSpec, d, source, f"{name}.datasets[{i}].") for i, d in enumerate(datasets)]
    if raw.get("eval") is not None:
        stage.eval = build_section(EvalSpec, raw["eval"], source, f"{name}.eval.")
    if raw.get("lora") is not None:
        stage.lora = build_lora(raw["lora"], source, f"{name}.lora.")  # every PEFT LoraConfig field
    if kind.options is not None:  # the kind's own keys, typed and checked by the options dataclass
        given = {key: value for key, value in raw.items() if key in options and value is not None}
        stage.options = build_section(kind.options, given, source, f"{name}.")
    return stage


def build_recipe(raw: dict, source: str, kinds: Mapping[str, StageKind]) -> Recipe:
    top = {"model", "chat_template", "output_dir", "patches", "hub", "eval", "launch", *kinds}
    for key in raw:
        if key not in top:
            raise _unknown(source, "", str(key), sorted(top))
    if not isinstance(raw.get("model"), dict) or not raw["model"].get("name_or_path"):
        raise UserError(f"{source}: model.name_or_path is required (a Hub id, a local path or builtin:tiny-mistral)")
    recipe = Recipe(model=build_section(ModelSpec, raw["model"], source, "model."), kinds=kinds, source=source)
    for key in ("chat_template", "output_dir"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str):
                raise UserError(f"{source}: {key} expects str, got {raw[key]!r}")
            setattr(recipe, key, raw[key])
    if raw.get("patches") is not None:
        try:
            recipe.patches = coerce(raw["patches"], "bool")
        except ValueError as err:
            raise UserError(f"{source}: patches {err} (false: plain TRL, every patch off)") from None
    for name, kind in kinds.items():
        if raw.get(name) is not None:
            recipe.sections[name] = _build_stage(kind, raw[name], source, kinds)
    if raw.get("hub") is not None:
        recipe.hub = build_section(Hub, raw["hub"], source, "hub.")
    if "eval" in raw:
        recipe.eval = build_evaluation(raw["eval"], source, [s.kind for s in recipe.stages])
    recipe.launch = raw.get("launch")
    validate(recipe)
    return recipe


# --- cross-field rules (no model, no data needed) --------------------------------------------------


def validate(recipe: Recipe) -> None:
    src, model = recipe.source, recipe.model
    if model.dtype not in DTYPES:
        raise UserError(f"{src}: model.dtype must be one of {', '.join(DTYPES)}, got {model.dtype!r}")
    quant = model.quantization
    if quant and quant.load_in_4bit and quant.load_in_8bit:
        raise UserError(f"{src}: model.quantization sets both load_in_4bit and load_in_8bit; keep one")
    if quant and quant.bnb_4bit_quant_type not in ("nf4", "fp4"):
        raise UserError(f"{src}: model.quantization.bnb_4bit_quant_type must be nf4 or fp4")
    for stage in recipe.stages:
        name = stage.kind
        quantized = quant and (quant.load_in_4bit or quant.load_in_8bit)
        if quantized and stage.lora is None:
            raise UserError(f"{src}: model.quantization loads the model in 4/8-bit, which cannot be trained "
                            f"directly; add a {name}.lora section (QLoRA), or remove model.quantization")
        for i, spec in enumerate(stage.datasets):
            if not 0 < spec.weight <= 1:
                raise UserError(f"{src}: {name}.datasets[{i}].weight is a fraction of the split in (0, 1], "
                                f"got {spec.weight}")
        if stage.eval is not None:
            ev = stage.eval
            if sum(x is not None for x in (ev.split, ev.fraction, ev.rows)) != 1:
                raise UserError(f"{src}: {name}.eval needs exactly one of split (e.g. test_sft), fraction "
                                "(e.g. 0.05, carved from train) or rows (e.g. 1000, carved from train)")
            if ev.fraction is not None and not 0 < ev.fraction < 1:
                hint = f"; for {ev.fraction:g} rows write {name}.eval.rows: {ev.fraction:g}" if ev.fraction >= 1 else ""
                raise UserError(f"{src}: {name}.eval.fraction must be in (0, 1), got {ev.fraction}{hint}")
            if ev.rows is not None and ev.rows < 1:
                raise UserError(f"{src}: {name}.eval.rows is a row count to carve from train, 1 or more; got {ev.rows}")
        weights = stage.trainer.get("loss_weights")
        losses = stage.trainer.get("loss_type", getattr(stage.spec.fields().get("loss_type"), "default", None))
        if weights is not None and isinstance(losses, list) and len(weights) != len(losses):  # DPOConfig.__post_init__
            raise UserError(f"{src}: {name}.loss_weights has {len(weights)} weights for {len(losses)} loss_type "
                            f"entries ({', '.join(losses)}); give one weight per loss")
        stage.spec.validate(stage, src)  # the kind's own rules (DPO: DPOTrainer's loss rules), before any model loads
        bf16, fp16 = stage.trainer.get("bf16"), stage.trainer.get("fp16")
        if bf16 and fp16:
            raise UserError(f"{src}: {name} sets both bf16 and fp16; keep one")
    hub = recipe.hub
    if hub is not None:
        if not re.fullmatch(r"([\w.-]+/)?[\w.-]+", hub.repo_id or ""):
            raise UserError(f"{src}: hub.repo_id must be a Hub repo id such as your-name/zephyr-smoke, "
                            f"got {hub.repo_id!r}")
        if hub.strategy not in ("end", "every_save"):
            raise UserError(f"{src}: hub.strategy must be end or every_save, got {hub.strategy!r}")


# --- what gets written next to the model -------------------------------------------------------------


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data, trainer fields flattened back into their stage."""
    out: dict[str, Any] = {
        "model": dataclasses.asdict(recipe.model),
        "chat_template": recipe.chat_template,
        "output_dir": recipe.output_dir,
    }
    if not recipe.patches:  # absent when on: older fingerprints stay valid
        out["patches"] = False
    for stage in recipe.stages:
        body = {"datasets": [dataclasses.asdict(d) for d in stage.datasets],
                "eval": dataclasses.asdict(stage.eval) if stage.eval else None,
                "lora": stage.lora.as_dict() if stage.lora else None}  # PEFT fields beside ours, as written
        if stage.options is not None:  # the kind's own keys, only where they differ from their default
            defaults = stage.spec.options()
            body.update({f.name: getattr(stage.options, f.name) for f in dataclasses.fields(stage.options)
                         if getattr(stage.options, f.name) != getattr(defaults, f.name)})
        out[stage.kind] = {**stage.trainer, **body}
    if recipe.hub is not None:
        out["hub"] = dataclasses.asdict(recipe.hub)
    if recipe.eval is not None:
        out["eval"] = dataclasses.asdict(recipe.eval)
    return redact(out)


def save_resolved(recipe: Recipe, directory: Path, overrides: list[str] = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    header = f"# resolved from {recipe.source}" + (f" with {' '.join(redact(list(overrides)))}" if overrides else "")
    path = directory / RESOLVED_RECIPE
    path.write_text(header + "\n" + yaml.safe_dump(to_dict(recipe), sort_keys=False), encoding="utf-8")
    return path


def load_resolved(stage_dir: Path, kinds: Mapping[str, StageKind]) -> Recipe:
    """The recipe a stage was made with, as `save_resolved` recorded it (for push and report)."""
    path = stage_dir / RESOLVED_RECIPE
    return build_recipe(read_yaml(path, "not found; was this directory made by zephyr-train?"), str(path), kinds)


# Trainer fields that change how a run is watched or stored, not what it computes.
_NOT_FINGERPRINTED = re.compile(
    r"^(logging_.*|report_to|run_name|save_.*|push_to_hub|hub_.*|output_dir|overwrite_output_dir|"
    r"dataloader_num_workers|disable_tqdm|eval_steps|eval_strategy|per_device_eval_batch_size|"
    r"resume_from_checkpoint|dataset_num_proc|include_.*|ddp_backend|ddp_timeout)$"
)


def fingerprint(recipe: Recipe, stage: str) -> dict[str, Any]:
    """The settings that decide what a stage computes; a checkpoint resumes only under the same ones."""
    resolved = to_dict(recipe)
    settings = {k: v for k, v in resolved[stage].items() if not _NOT_FINGERPRINTED.match(k)}
    settings = {"model": resolved["model"], "chat_template": resolved["chat_template"], stage: settings}
    if "patches" in resolved:
        settings["patches"] = resolved["patches"]
    upstream = recipe.upstream(stage)
    if upstream is not None:  # DPO starts from the SFT result: its settings count too
        settings[upstream.kind] = fingerprint(recipe, upstream.kind)["digest"]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"digest": digest, "settings": settings}
