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
    parser.add_argument("recipe", nargs="?", help="YAML recipe, e.g. recipes/smoke.yaml")
    parser.add_argument("--config", metavar="FILE",
                        help="a single-stage alignment-handbook config (flat TRL keys), instead of RECIPE")
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
    check = commands.add_parser("check", allow_abbrev=False, help="preflight: recipe rules, local data, memory per GPU",
                                description="Find what will go wrong with RECIPE in seconds, offline, loading no "
                                "weights: cross-field rules, local data, per-GPU memory, steps and global batch. "
                                "Exit 0: fine; 2: an error; 3: it does not fit the memory given.")
    check.add_argument("recipe", help="YAML recipe, e.g. recipes/zephyr-7b-beta/qlora.yaml")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe keys, dotted for nesting")
    check.add_argument("--accelerate-config", metavar="FILE", help="the accelerate config you will launch with")
    check.add_argument("--gpus", type=int, help="GPUs in all (default: the config's num_processes, else 1)")
    check.add_argument("--gpu-memory", type=float, metavar="GIB", help="memory of each GPU, GiB (e.g. 24, 80)")
    check.add_argument("--gpu", metavar="NAME", help="GPU model (a100, h100, rtx4090, t4, v100, ...): memory and bf16")
    return parser


def _load(args: argparse.Namespace, command: str):
    """The recipe from RECIPE or from a handbook --config, through the preflight's rules and data checks
    (every stage for `run`: a DPO mistake must not wait for SFT to finish)."""
    from zephyr_train.recipe import STAGES, load_recipe

    config = getattr(args, "config", None)
    if config and args.recipe and "=" in args.recipe:  # `--config FILE key=value`: no RECIPE
        args.recipe, args.overrides = None, [args.recipe, *args.overrides]
    if (args.recipe is None) == (config is None):
        raise UserError(f"{command}: give one of RECIPE or --config FILE (an alignment-handbook config)")
    if config:
        from zephyr_train.handbook import load_handbook

        recipe = load_handbook(config, command, args.overrides)
    else:
        recipe = load_recipe(args.recipe, args.overrides)
    from zephyr_train.preflight import before_stage

    before_stage(recipe, STAGES if command == "run" else (command,))
    return recipe


def _sft(args: argparse.Namespace) -> int:
    recipe = _load(args, "sft")
    from zephyr_train.sft import run_sft

    run_sft(recipe, args.overrides, overwrite=args.overwrite)
    return 0


def _dpo(args: argparse.Namespace) -> int:
    recipe = _load(args, "dpo")
    from zephyr_train.dpo import run_dpo

    run_dpo(recipe, args.overrides, overwrite=args.overwrite)
    return 0


def _run(args: argparse.Namespace) -> int:
    recipe = _load(args, "run")
    from zephyr_train.pipeline import run_pipeline

    run_pipeline(recipe, args.overrides, force=args.force)
    return 0


def _check(args: argparse.Namespace) -> int:
    from zephyr_train import launcher, preflight
    from zephyr_train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    launch = launcher.read(args.accelerate_config) if args.accelerate_config else None
    hardware = preflight.hardware_from(args.gpus, args.gpu_memory, args.gpu, launch or launcher.Launch("<none>"))
    report = preflight.check(recipe, launch, hardware)
    print("\n".join(report.lines))
    for warning in report.warnings:
        print(f"warning: {warning}")
    for error in report.errors:
        print(f"error: {error}")
    if report.errors:
        print(f"zephyr-train: error: {recipe.source}: {len(report.errors)} problem(s) above; fix them before "
              "launching", file=sys.stderr)
        return 2
    if launch is not None and not launch.on_cpu and hardware.memory_gib is None:
        print("note: give --gpu-memory GIB (or --gpu NAME) to know whether it fits")
    verdict = {True: "fits", False: "does NOT fit", None: "checked"}[report.fits]
    print(f"check: {recipe.source}: {verdict}" + (f" on {hardware.gpus} x {hardware.memory_gib:g} GiB"
                                                  if hardware.memory_gib else ""))
    return 3 if report.fits is False else 0


COMMANDS = {"sft": _sft, "dpo": _dpo, "run": _run, "check": _check}


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
