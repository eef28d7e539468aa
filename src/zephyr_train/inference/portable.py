"""Base-model references that survive moving or copying a run folder.

PEFT writes the base of an adapter as the absolute path it was loaded from (`/home/me/runs/x/sft/merged`,
`~/.cache/zephyr-train/...`), so an adapter broke once its run folder was moved or copied to another box.
When a stage finishes, its `adapter_config.json` (and its card) name the base by Hub id when one is known,
else by a path relative to the run folder (`sft/merged`) when the base lives inside it; a base outside
both (a local model directory, the built-in model's cache) keeps its absolute path, since no relative
path could follow it. transformers and PEFT resolve a relative base against the working directory, so
`AutoPeftModelForCausalLM.from_pretrained("dpo")` works from inside the run folder; our own loaders
(`chat`, `merge`, `push`, the report) resolve it against the run folder from anywhere (`resolve_base`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zephyr_train.run_files import ADAPTER_CONFIG


def portable_base(base: str, run_dir: Path, hub_id: str | None = None) -> str:
    """The base as a moved run folder can still find it: Hub id, else relative to the run folder, else as is."""
    if hub_id:
        return hub_id
    path = Path(base).expanduser()
    if not path.is_absolute() and not path.exists():
        return base  # already portable (a Hub id or a run-relative path)
    run = run_dir.resolve()
    try:
        return path.resolve().relative_to(run).as_posix()
    except ValueError:
        return str(path.resolve()) if path.exists() else base


def resolve_base(adapter_dir: Path, base: str) -> str:
    """Where to load `base` from for the adapter in `adapter_dir` (RUN/stage, RUN/stage/checkpoint-N): a
    run-relative path is found against the run folder, whatever the working directory."""
    path = Path(base)
    if path.is_absolute() or (path / "config.json").exists():
        return base
    for root in (adapter_dir.parent, adapter_dir.parent.parent):
        if (root / path / "config.json").exists():
            return str(root / path)
    return base


def make_portable(stage_dir: Path, run_dir: Path, hub_id: str | None = None) -> str | None:
    """Rewrite the stage's adapter_config.json base (temp file, then rename); returns the base written."""
    config_file = stage_dir / ADAPTER_CONFIG
    if not config_file.exists():
        return None
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = portable_base(config.get("base_model_name_or_path") or "", run_dir, hub_id)
    tmp = config_file.with_name(config_file.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, config_file)
    return config["base_model_name_or_path"]


def load_model(path: Path, **kwargs: Any) -> Any:
    """A model directory, or an adapter on its base (a run-relative base found from any working directory)."""
    from transformers import AutoModelForCausalLM

    config_file = Path(path) / ADAPTER_CONFIG
    if not config_file.exists():
        return AutoModelForCausalLM.from_pretrained(path, dtype="auto", **kwargs)
    from peft import PeftModel

    base = resolve_base(Path(path), json.loads(config_file.read_text()).get("base_model_name_or_path") or "")
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto", **kwargs), str(path))
