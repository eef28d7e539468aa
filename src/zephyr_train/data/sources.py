"""What a name in a recipe or on the command line refers to: a built-in, a local path, or a Hub repo id.

One rule for every place that has to decide (dataset sources, curation sources, models, the preflight's
architecture lookup, model-card metadata), so `zephyr-train check`, a stage and `push` never disagree
about whether `org/name` is something to download.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PREFIX = "builtin:"  # built-in models and datasets (data/builtin.py): `builtin:tiny-mistral`
# Data files a source may name directly; a name ending in one of these is a (missing) file, never a repo.
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".arrow")
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def cache_root() -> Path:
    """Where built-in models are built once and kept (ZEPHYR_TRAIN_CACHE, else ~/.cache/zephyr-train)."""
    return Path(os.environ.get("ZEPHYR_TRAIN_CACHE", Path.home() / ".cache" / "zephyr-train"))


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def is_hub_id(name: str | None) -> bool:
    """True when `name` can only mean a Hub repo: `owner/name` (or a legacy bare `name`), not built-in, not an
    existing local path, not path-like (`./x`, `/x`, `~/x`, `a/b/c`), not a data file name."""
    if not name or is_builtin(name) or name.startswith((".", "/", "~")):
        return False
    if not _REPO_ID.fullmatch(name) or name.lower().endswith(DATA_FILE_SUFFIXES):
        return False
    return not Path(name).expanduser().exists()
