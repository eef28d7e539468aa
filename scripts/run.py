"""`accelerate launch scripts/run.py RECIPE [key=value ...]`, or `--config HANDBOOK.yaml`: `zephyr-train run`.

A thin entry point in the place alignment-handbook users look for one; all logic lives in the package.
"""

import sys

from zephyr_train.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
