"""`accelerate launch scripts/sft.py RECIPE [key=value ...]`, or `--config HANDBOOK.yaml`: `zephyr-train sft`.

A thin entry point in the place alignment-handbook users look for one; all logic lives in the package.
"""

import sys

from zephyr_train.cli import main

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))
