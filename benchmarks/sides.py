"""Each benchmark side runs in a process of its own, so that its peak RSS is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
