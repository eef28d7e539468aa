"""Which model directory a user means: a merged model, a stage directory or a whole run.

`export` and `demo` take what a run leaves on disk. A run directory names its final model in
`summary.json`; a LoRA stage directory holds the adapter and, beside it, `merged/` (the adapter merged
into its base in 16/32-bit, which is what a GGUF must hold); a full fine-tuning stage directory is
the model itself. Everything here reads small JSON files only, so a wrong path is answered before
torch is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zephyr_train.config.recipe import ModelSpec
from zephyr_train.data import builtin, packaged
from zephyr_train.data.sources import is_builtin
from zephyr_train.errors import UserError
from zephyr_train.inference.merge import merge_adapter
from zephyr_train.run_files import ADAPTER_CONFIG, MERGED, SUMMARY

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclass
class ModelSource:
    """A model directory ready to read: weights (safetensors) and tokenizer in `path`."""

    path: Path
    given: Path
    adapter: Path | None = None  # set when `path` must first be made by merging this adapter
    base: str | None = None

    @property
    def needs_merge(self) -> bool:
        return self.adapter is not None


def has_weights(path: Path) -> bool:
    return (path / "config.json").exists() and any((path / name).exists() for name in WEIGHT_FILES)


def final_model_of(run_dir: Path) -> Path | None:
    """The final model a finished run names in its summary.json, if it is a run directory."""
    summary = run_dir / SUMMARY
    if not summary.exists():
        return None
    try:
        final = json.loads(summary.read_text()).get("final_model")
    except (json.JSONDecodeError, AttributeError) as err:
        raise UserError(f"{summary}: not a run summary ({err}); give the model directory itself") from err
    return Path(final) if final else None


def _inside_run(run_dir: Path, final: Path) -> Path:
    """`final` as the summary wrote it (relative to where the run was started, e.g. runs/x/dpo/merged), found
    from here: itself if it exists, else its tail inside `run_dir` (the run folder may have been moved)."""
    if final.exists():
        return final
    for i in range(len(final.parts)):
        candidate = run_dir.joinpath(*final.parts[i:])
        if candidate.exists():
            return candidate
    raise UserError(f"{run_dir / SUMMARY}: final_model {final} is not there; give the model directory itself")


def _base_exists(base: str) -> bool:

    if is_builtin(base) or Path(base).is_dir():
        return True
    try:  # a Hub id counts when its files are in the local cache (no download happens here)
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(base, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not there
        return False


def local_dir(name: str | Path) -> Path:
    """A model directory as given, or a built-in model's or a GGUF file's (built on first use): `chat
    builtin:smollm2-135m`, `chat model.gguf`."""
    if str(name).endswith(".gguf") and Path(name).is_file():
        return packaged.from_file(Path(name), str(name))
    if not is_builtin(str(name)):
        return Path(name)
    try:
        return builtin.model_dir(str(name))
    except KeyError:
        raise UserError(f"{name} is not a built-in model; use one of {', '.join(builtin.names())}") from None


def resolve(model_dir: str | Path, what: str = "export") -> ModelSource:
    """The model `model_dir` stands for, or a one-line UserError saying what is missing."""
    given = local_dir(model_dir)
    if not given.is_dir():
        raise UserError(f"{given}: no such directory; give a model, a stage (runs/x/dpo) or a run directory (runs/x)")
    path = given
    final = final_model_of(given)
    if final is not None:
        path = _inside_run(given, final)
    if not has_weights(path) and has_weights(path / MERGED):
        path = path / MERGED  # a LoRA stage: its adapter merged into its base
    if has_weights(path):
        if not (path / "tokenizer_config.json").exists():
            raise UserError(f"{path}: no tokenizer saved with the model; {what} needs tokenizer_config.json beside it")
        return ModelSource(path=path, given=given)
    adapter_config = path / ADAPTER_CONFIG
    if adapter_config.exists():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base or not _base_exists(base):
            raise UserError(f"{adapter_config}: a LoRA adapter whose base model {base!r} is not here; merge it "
                            "first with `zephyr-train merge ADAPTER_DIR --out DIR --base BASE_DIR` and give DIR")
        if not (path / "tokenizer_config.json").exists():
            raise UserError(f"{path}: no tokenizer saved with the adapter; {what} needs tokenizer_config.json")
        return ModelSource(path=path / MERGED, given=given, adapter=path, base=base)
    raise UserError(f"{path}: holds no model (config.json with model.safetensors) nor a LoRA adapter; give a "
                    "merged model, a stage directory (runs/x/dpo) or a run directory (runs/x)")


def merge_if_needed(source: ModelSource, into: Path) -> Path:
    """The directory to read weights from: the model itself, or the adapter merged into `into`."""
    if not source.needs_merge:
        return source.path

    base = str(builtin.model_dir(source.base)) if is_builtin(source.base) else source.base
    return merge_adapter(source.adapter, base, ModelSpec(name_or_path=base), into)
