"""`zephyr-train env`: the versions a bug report needs, and the provenance the run report shows.

The trainer libraries break their APIs between minor releases (the public Zephyr recipes fail on every
TRL release after theirs), so a report without exact versions cannot be reproduced. Versions come from
installed package metadata, so listing them imports nothing heavy; only `env` itself asks torch about
the accelerator.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path

PACKAGES = ("zephyr-train", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub",
            "tokenizers", "safetensors", "bitsandbytes", "deepspeed", "flash-attn", "wandb", "tensorboard")


NOT_INSTALLED = "not installed"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package, NOT_INSTALLED for the missing ones."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = NOT_INSTALLED
    return found


def git_commit(where: Path | None = None) -> str | None:
    """The commit (with `-dirty` when files changed) of the checkout zephyr-train runs from, if any."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, `zephyr-train` for however the package was started."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["zephyr-train", *args])


def accelerator() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"CUDA {torch.version.cuda}: {len(names)} x {names[0]}" + (f" (and {', '.join(names[1:])})"
                                                                          if len(set(names)) > 1 else "")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "Apple MPS"
    return "none (CPU only)"


def report_lines() -> list[str]:
    """What `zephyr-train env` prints: paste it into a bug report."""
    lines = [f"python: {platform.python_version()} ({sys.executable})", f"platform: {platform.platform()}",
             f"git commit: {git_commit() or 'not a git checkout'}"]
    lines += [f"{name}: {version}" for name, version in versions().items()]
    lines.append(f"accelerator: {accelerator()}")
    return lines


def provenance(started: float) -> dict:
    """What the run report shows about how a run was made: versions, commit, command, total wall time."""
    import time

    keep = ("zephyr-train", "torch", "transformers", "trl", "peft", "accelerate", "datasets")
    return {"versions": versions(keep), "git_commit": git_commit(), "command": command_line(),
            "python": platform.python_version(), "wall_time_s": round(time.time() - started, 1)}
