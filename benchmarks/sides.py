"""Each benchmark side runs in a process of its own, so that its peak RSS is its own; and `check`'s memory
estimate for the settings a side ran, to print beside its measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

TAG = "RESULT "


def report(result: dict) -> None:
    """Called by the child: hand the side's figures to the parent on stdout."""
    print(TAG + json.dumps(result))


def run(script: str, name: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `script --child NAME ARGS` and return the figures it reported; stop the benchmark if it failed."""
    cmd = [sys.executable, script, "--child", name, *args]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith(TAG)]
    if done.returncode or not lines:
        sys.exit(f"{name} side failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(TAG):])


def estimate_for(recipe: Any, kind: str, batch: int | None = None, checkpointing: bool | None = None) -> Any:
    """`zephyr-train check`'s estimate (one process, no accelerate config) for the recipe as the run uses it."""
    from zephyr_train.preflight import memory
    from zephyr_train.preflight.architectures import architecture_of
    from zephyr_train.preflight.launcher import Launch

    arch = architecture_of(recipe.model.name_or_path, recipe.model.revision)
    return memory.estimate(arch, recipe, kind, Launch(source="<none>"), 1, batch, checkpointing)
