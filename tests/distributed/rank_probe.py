"""`zephyr-train ARGS` in a launched process, with one trainer callback added to every stage: after each
optimizer step it appends this rank's parameter checksum and step to OUT/rank{RANK}.jsonl (OUT is the first
argument). The tests compare ranks with it; nothing else differs from `python -m zephyr_train ARGS`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from zephyr_train.cli import main
from zephyr_train.publish import hub


class Checksums(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN003
        total = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, "checksum": total}) + "\n")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    probe = Checksums(out / f"rank{os.environ.get('RANK', '0')}.jsonl")
    with_hub = hub.save_callbacks
    hub.save_callbacks = lambda *args: [*with_hub(*args), probe]
    sys.exit(main(sys.argv[2:]))
