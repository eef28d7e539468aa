"""`zephyr-train`: one subcommand per stage or tool, each a thin call into its module.

Only argparse, YAML and our recipe code are imported here, so `--help` and recipe errors answer in
well under a second; torch, transformers and TRL load only once a stage really starts.
Exit codes: 0 success, 2 user error (one line, no traceback), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys

from zephyr_train import __version__
from zephyr_train.errors import UserError


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/smoke.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override recipe keys, dotted for nesting: sft.learning_rate=1e-4 output_dir=runs/x")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete what the output directory holds and train from scratch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zephyr-train", allow_abbrev=False,
        description="Turn a base model into a chat assistant the Zephyr way: SFT, then DPO.",
        epilog="Start with: zephyr-train sft recipes/smoke.yaml   (tiny built-in model, runs on a CPU)",
    )
    parser.add_argument("--version", action="version", version=f"zephyr-train {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sft = commands.add_parser("sft", allow_abbrev=False,
                              help="supervised fine-tuning (stage 1) from a recipe's sft section",
                              description="Run the SFT stage of RECIPE on TRL's SFTTrainer.")
    _add_recipe_args(sft)
    dpo = commands.add_parser("dpo", allow_abbrev=False,
                              help="direct preference optimization (stage 2) from a recipe's dpo section",
                              description="Run the DPO stage of RECIPE on TRL's DPOTrainer, starting from the "
                              "SFT stage's result when the recipe has an sft section.")
    _add_recipe_args(dpo)
    run = commands.add_parser("run", allow_abbrev=False, help="SFT then DPO from one recipe (skips finished stages)",
                              description="Run every stage of RECIPE in order; a stage finished under the same "
                              "settings is skipped, a changed one re-run, an interrupted one resumed.")
    run.add_argument("recipe", help="YAML recipe, e.g. recipes/smoke.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe keys, dotted for nesting")
    run.add_argument("--force", action="store_true", help="run every stage again from scratch")
    return parser


def _sft(args: argparse.Namespace) -> int:
    from zephyr_train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from zephyr_train.sft import run_sft

    run_sft(recipe, args.overrides, overwrite=args.overwrite)
    return 0


def _dpo(args: argparse.Namespace) -> int:
    from zephyr_train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from zephyr_train.dpo import run_dpo

    run_dpo(recipe, args.overrides, overwrite=args.overwrite)
    return 0


def _run(args: argparse.Namespace) -> int:
    from zephyr_train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from zephyr_train.pipeline import run_pipeline

    run_pipeline(recipe, args.overrides, force=args.force)
    return 0


COMMANDS = {"sft": _sft, "dpo": _dpo, "run": _run}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`sft r.yaml --overwrite sft.seed=1`); argparse leaves those over
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"zephyr-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zephyr-train: interrupted; re-run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 1
