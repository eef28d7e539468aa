"""`zephyr-train data ultrachat|ultrafeedback`: the command over the engine and its two dataset kinds.

Kept apart from `engine` so the engine never imports the kinds that build on it (no import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr_train.data.curation import ultrachat, ultrafeedback
from zephyr_train.data.curation.engine import curate
from zephyr_train.errors import UserError


def run_command(args: Any) -> dict:
    """`zephyr-train data ultrachat|ultrafeedback` from parsed arguments."""
    if args.test_size <= 0 or (args.test_size >= 1 and args.test_size != int(args.test_size)):
        raise UserError(f"--test-size {args.test_size:g}: give a fraction below 1 or a whole number of rows")
    if args.size is not None and args.size < 1:
        raise UserError(f"--size {args.size}: give a positive number of rows")
    options = {"source": args.source, "split": args.split, "seed": args.seed, "size": args.size,
               "test_size": args.test_size}
    if args.dataset == "ultrachat":
        kind = ultrachat.KIND
        options["disclaimers"] = ultrachat.load_disclaimers(args.disclaimers)
        options["_disclaimer_regex"] = ultrachat.compile_disclaimers(options["disclaimers"])
    else:
        kind = ultrafeedback.KIND
        options.update(score=args.score, drop_truthfulqa=args.drop_truthfulqa)
    return curate(kind, options, Path(args.out), num_proc=max(1, args.num_proc), overwrite=args.overwrite,
                  parquet=args.parquet, push_to_hub=args.push_to_hub)
