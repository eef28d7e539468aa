"""zephyr-train: base model -> SFT -> DPO chat assistant, the way Zephyr-7B was made.

Importing the package is cheap on purpose: torch, transformers and TRL are imported only by the
modules that train, so `zephyr-train --help` and recipe validation answer in a fraction of a second.
"""

__version__ = "0.1.0"
