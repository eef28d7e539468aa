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
    _add_data_parser(commands)
    return parser


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", allow_abbrev=False, help="build the Zephyr SFT / DPO datasets from raw data",
                               description="Curate raw UltraChat or UltraFeedback into a DatasetDict that a recipe "
                               "names as a local dataset; a report of every rule is saved beside it.")
    kinds = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    chat = kinds.add_parser("ultrachat", allow_abbrev=False, help="filtered UltraChat SFT set (ultrachat_200k schema)")
    feedback = kinds.add_parser("ultrafeedback", allow_abbrev=False,
                                help="binarized UltraFeedback preference pairs (ultrafeedback_binarized schema)")
    for kind, size, test_size in ((chat, 200_000, 0.1), (feedback, None, 2000)):
        kind.add_argument("--source", required=True, help="Hub dataset id, .jsonl/.json/.parquet file(s) or glob, "
                          "or a directory saved by datasets")
        kind.add_argument("--out", required=True, help="directory to save the DatasetDict to")
        kind.add_argument("--split", default="train", help="split of the source to read (default: train)")
        kind.add_argument("--size", type=int, default=size,
                          help=f"keep at most this many rows, test split included, seeded (default: {size or 'all'})")
        kind.add_argument("--test-size", type=float, default=test_size,
                          help=f"test split: a fraction below 1 or a number of rows (default: {test_size:g})")
        kind.add_argument("--seed", type=int, default=42, help="seed of the sampling and the split (default: 42)")
        kind.add_argument("--num-proc", type=int, default=1, help="worker processes for the per-row rules")
        kind.add_argument("--parquet", action="store_true", help="also write DIR/parquet/{split}.parquet")
        kind.add_argument("--push-to-hub", metavar="REPO", help="upload as this dataset repo (token: HF_TOKEN)")
        kind.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    chat.add_argument("--disclaimers", metavar="FILE",
                      help="regular expressions (one a line) of AI disclaimers to remove; default: the built-in list")
    feedback.add_argument("--score", choices=("mean", "overall"), default="mean",
                          help="rank completions by the mean of the aspect ratings (paper) or by overall_score")
    feedback.add_argument("--drop-truthfulqa", action="store_true", help="leave out TruthfulQA-sourced prompts")


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


def _data(args: argparse.Namespace) -> int:
    from zephyr_train.curation import run_command

    run_command(args)
    return 0


COMMANDS = {"sft": _sft, "dpo": _dpo, "run": _run, "data": _data}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`sft r.yaml --overwrite sft.seed=1`); argparse leaves those over
    unknown = [item for item in extra if item.startswith("-") or "=" not in item or args.command == "data"]
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
