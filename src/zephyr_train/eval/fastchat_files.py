"""FastChat's own MT-Bench data, the default inputs: the 80 questions, the judge prompts and GPT-4's
reference answers, exactly as FastChat's llm_judge reads them, so a score here is judged on what the
published scores were judged on.

Found, in this order: an installed FastChat source tree that ships its `llm_judge/data/` folder (the PyPI
wheel does not), the cache (ZEPHYR_TRAIN_CACHE/fastchat/COMMIT/), a download from FastChat's GitHub at one
pinned commit (so the files cannot change under a cached score). Offline with none of them: one line saying
which flag takes a local copy instead.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from zephyr_train.data.sources import cache_root
from zephyr_train.errors import UserError
from zephyr_train.eval import store

SOURCE = "fastchat"  # the value of --questions / --judge-prompts / --reference-answers that means these files
COMMIT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"  # lm-sys/FastChat main, 2025-04-12
URL = "https://raw.githubusercontent.com/lm-sys/FastChat/{commit}/fastchat/llm_judge/data/{path}"
# name -> (path under fastchat/llm_judge/data/, the flag that takes a local copy)
FILES = {"question.jsonl": ("mt_bench/question.jsonl", "--questions"),
         "judge_prompts.jsonl": ("judge_prompts.jsonl", "--judge-prompts"),
         "gpt-4.jsonl": ("mt_bench/reference_answer/gpt-4.jsonl", "--reference-answers")}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def installed(path: str) -> Path | None:
    """The file in an installed FastChat source tree (`pip install -e FastChat`), if it ships its data."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("fastchat")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "llm_judge" / "data" / path
        if candidate.is_file():
            return candidate
    return None


def fastchat_file(name: str) -> Path:
    """A local path to FastChat's file NAME (a key of FILES): installed, cached, or downloaded now."""
    path, flag = FILES[name]
    found = installed(path)
    if found is not None:
        return found
    cached = cache_root() / "fastchat" / COMMIT[:12] / name
    if cached.is_file():
        return cached
    url = URL.format(commit=COMMIT, path=path)
    why = "offline (HF_HUB_OFFLINE=1)" if offline() else _download(url, cached)
    if why:
        raise UserError(f"FastChat's {name} is not cached and cannot be downloaded: {why}; pass {flag} FILE, a "
                        f"copy of FastChat's fastchat/llm_judge/data/{path} ({url}), or run once online")
    return cached


def _download(url: str, target: Path) -> str:
    """'' once the file is saved (atomically, so a cut download is never cached), else why it failed."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - a fixed https URL
            text = response.read().decode("utf-8")
    except OSError as err:
        return f"{type(err).__name__}: {str(err)[:120]}"
    store.write_atomic(target, text)
    return ""
