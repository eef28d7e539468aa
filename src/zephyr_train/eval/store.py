"""How an evaluation folder keeps what it has paid for: append-only JSONL caches (a crash loses at most
the line being written), files replaced atomically (temp file, then rename), and a settings record that
decides whether cached answers still belong to the model and questions asked now."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zephyr_train.errors import UserError

SETTINGS = "settings.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_cache(path: Path) -> list[dict]:
    """The rows of an append-only cache; a line cut short by a crash is skipped (it is redone)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def claim(folder: Path, settings: dict, overwrite: bool, resume_hint: str) -> bool:
    """Record `settings` in FOLDER; True when it already held work made under the same settings (resume).
    Other settings stop with the first difference, unless `overwrite` clears the folder."""
    recorded = folder / SETTINGS
    if recorded.exists() and not overwrite:
        old = json.loads(recorded.read_text(encoding="utf-8"))
        if old == settings:
            return True
        key = next((k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)), "?")
        raise UserError(f"{folder}: holds answers made with other settings ({key}: {old.get(key)!r} then, "
                        f"{settings.get(key)!r} now); {resume_hint}")
    if overwrite and recorded.exists():  # only a folder we made is cleared
        shutil.rmtree(folder)
    write_json(recorded, settings)
    return False
