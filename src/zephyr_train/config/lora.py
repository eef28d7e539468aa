"""A stage's `lora` section: every field of the installed PEFT's `LoraConfig`, under PEFT's own names.

`r`, `alpha`, `dropout`, `target_modules`, `modules_to_save` and `bias` are our recipe's long-standing
keys (`lora_alpha`/`lora_dropout`, PEFT's names, are accepted for the two renamed ones); every other
`LoraConfig` field (DoRA's `use_dora`, rsLoRA's `use_rslora`, `init_lora_weights`, `layers_to_transform`,
`rank_pattern`, ...) is taken as written and handed to PEFT unchanged. The schema is read from PEFT's
source (`ast`, no torch: `check` stays well under a second), names, types and `Literal` values included;
the real `LoraConfig.__post_init__` runs in `check_with_peft` at the start of a stage, before any model
loads, so its own rules (e.g. `use_dora` with `megatron_config`) are one-line errors too.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from zephyr_train.config.trainer_fields import Field, check_value, coerce, dataclass_fields
from zephyr_train.errors import UserError

PEFT_CONFIG = ("peft.tuners.lora.config", "LoraConfig")
# Our spelling -> PEFT's, for the keys recipes have always used.
RENAMED = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
# Set by us or by PEFT itself: a recipe never gives these.
# Other spellings people use (the handbook's, older PEFT's), with the key meant.
SPELLINGS = {"rank": "r", "lora_r": "r", "lora_rank": "r", "lora_target_modules": "target_modules"}
NOT_OURS = {"task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
            "peft_version"}


@dataclass
class Lora:
    r: int = 16
    alpha: int = 16  # PEFT: lora_alpha
    dropout: float = 0.05  # PEFT: lora_dropout
    target_modules: list | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    modules_to_save: list | None = None
    bias: str = "none"
    peft: dict[str, Any] = field(default_factory=dict)  # any other LoraConfig field, by its PEFT name

    def get(self, name: str, default: Any = None) -> Any:
        """A PEFT field's value as the recipe sets it (e.g. `use_dora`), `default` when not set."""
        return self.peft.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        """The section as written in a resolved recipe: our keys, then the PEFT fields given."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "peft"}
        return {**out, **self.peft}

    def peft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `peft.LoraConfig`, under PEFT's names."""
        return {RENAMED.get(k, k): v for k, v in self.as_dict().items()}


@cache
def peft_fields() -> dict[str, Field]:
    """The recipe-settable fields of the installed PEFT's LoraConfig, read from its source."""
    try:
        fields = dataclass_fields(*PEFT_CONFIG)
    except ModuleNotFoundError:
        return {}
    return {name: f for name, f in fields.items() if name not in NOT_OURS}


def _check_nested(value: Any, annotation: str) -> Any:
    """A sub-config (`loftq_config`, `eva_config`, ...) is written as a mapping; PEFT turns it into its class."""
    if isinstance(value, dict) and "Config" in annotation:
        return value
    return None


def build_lora(raw: Any, source: str, where: str) -> Lora:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where.rstrip('.')} must be a mapping of LoRA settings (r, alpha, ...)")
    fields = peft_fields()
    ours = {f.name: f for f in dataclasses.fields(Lora) if f.name != "peft"}
    lora, given = Lora(), set()
    for key, value in raw.items():
        key = str(key)
        name = {v: k for k, v in RENAMED.items()}.get(key, key)  # lora_alpha -> alpha
        if name in given:
            raise UserError(f"{source}: {where}{key} and {where}{RENAMED.get(name, name)} are the same setting; "
                            "keep one")
        given.add(name)
        if name in ours:
            if value is None and name in ("r", "alpha", "dropout", "bias"):
                raise UserError(f"{source}: {where}{key} must not be null")
            peft_field = fields.get(RENAMED.get(name, name))
            try:
                value = check_value(peft_field, value) if peft_field else coerce(value, str(ours[name].type))
            except ValueError as err:
                raise UserError(f"{source}: {where}{key} {err}") from None
            setattr(lora, name, value)
            continue
        if key in NOT_OURS:
            raise UserError(f"{source}: {where}{key} is set by zephyr-train (a causal LM adapter on the stage's "
                            "model); remove it")
        if key not in fields:
            valid = sorted(set(ours) | set(fields) - set(RENAMED.values()))
            close = [SPELLINGS[key]] if key in SPELLINGS else difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            raise UserError(f"{source}: unknown key '{where}{key}' (not a field of the installed PEFT's LoraConfig); "
                            f"{hint}")
        nested = _check_nested(value, fields[key].annotation)
        if nested is None:
            try:
                value = check_value(fields[key], value)
            except ValueError as err:
                raise UserError(f"{source}: {where}{key} {err}") from None
        lora.peft[key] = value
    if lora.r <= 0:
        raise UserError(f"{source}: {where}r must be a positive rank, got {lora.r}")
    return lora


def check_with_peft(stages: list[Any], source: str) -> None:
    """Build each stage's real `peft.LoraConfig` (imports torch): its `__post_init__` rules, before any model
    loads. Called at the start of `sft`/`dpo`/`run`, never by `check`."""
    with_lora = [s for s in stages if getattr(s, "lora", None) is not None]
    if not with_lora:
        return
    from peft import LoraConfig

    for stage in with_lora:
        try:
            LoraConfig(task_type="CAUSAL_LM", **stage.lora.peft_kwargs())
        except (ValueError, TypeError) as err:
            message = " ".join(str(err).split())
            raise UserError(f"{source}: {stage.kind}.lora is refused by PEFT's LoraConfig: {message}") from None
