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
from zephyr_train.stages import KINDS, load_recipe


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="YAML recipe, e.g. recipes/smoke.yaml")
    parser.add_argument("--config", metavar="FILE",
                        help="a single-stage alignment-handbook config (flat TRL keys), instead of RECIPE")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override recipe keys, dotted for nesting: sft.learning_rate=1e-4 output_dir=runs/x")
    parser.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                        help="start over: delete what the output directory holds and train from scratch "
                        "(--force is the same flag)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zephyr-train", allow_abbrev=False,
        description="Turn a base model into a chat assistant the Zephyr way: SFT, then DPO.",
        epilog="Start with: make smoke   (= zephyr-train run recipes/smoke.yaml --overwrite: tiny built-in model, "
        "SFT then DPO on a CPU in minutes); bug reports: zephyr-train env",
    )
    parser.add_argument("--version", action="version", version=f"zephyr-train {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for kind in KINDS.values():  # one subcommand per registered stage kind
        starts = f", starting from the {kind.starts_from} stage's result when the recipe has an " \
                 f"{kind.starts_from} section" if kind.starts_from else ""
        stage = commands.add_parser(kind.name, allow_abbrev=False,
                                    help=f"{kind.title} from a recipe's {kind.name} section",
                                    description=f"Run the {kind.label} stage of RECIPE on TRL's "
                                    f"{kind.trainer_class.rpartition('.')[2]}{starts}.")
        _add_recipe_args(stage)
    run = commands.add_parser("run", allow_abbrev=False,
                              help=f"{' then '.join(k.label for k in KINDS.values())} from one recipe "
                              "(skips finished stages)",
                              description="Run every stage of RECIPE in order; a stage finished under the same "
                              "settings is skipped, a changed one re-run, an interrupted one resumed.")
    run.add_argument("recipe", help="YAML recipe, e.g. recipes/smoke.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe keys, dotted for nesting")
    run.add_argument("--overwrite", "--force", dest="force", action="store_true",
                     help="start over: run every stage again from scratch (--force is the same flag)")
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
    check.add_argument("--show", type=int, metavar="N", help="print N training examples per stage as rendered for "
                       "training, the text that carries loss marked [[ ]]")
    _add_env_parser(commands)
    _add_tool_commands(commands)
    _add_data_parser(commands)
    _add_export_demo_parsers(commands)
    from zephyr_train.eval.command import add_parser as add_eval_parser

    add_eval_parser(commands)
    return parser


def _add_env_parser(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("env", allow_abbrev=False, help="print versions and hardware, for bug reports",
                        description="Print Python, platform, git commit, library versions and the accelerator.")


def _add_tool_commands(commands: argparse._SubParsersAction) -> None:
    """What comes after training: talk to the model, merge an adapter, report on a run, push it."""
    chat = commands.add_parser("chat", allow_abbrev=False, help="chat with a trained model in the terminal",
                               description="Chat with MODEL_DIR (a stage directory, merged model or LoRA adapter) "
                               "using its chat template; --prompt answers once and exits, for scripts.")
    chat.add_argument("model_dir", metavar="MODEL_DIR")
    chat.add_argument("--prompt", help="answer this one prompt on stdout and exit")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--top-p", type=float, default=0.95)
    chat.add_argument("--top-k", type=int, default=50)
    chat.add_argument("--repetition-penalty", type=float, default=1.0)
    chat.add_argument("--greedy", action="store_true", help="no sampling: always the most likely token")
    chat.add_argument("--seed", type=int, help="seed the sampling, for repeatable answers")
    merge = commands.add_parser("merge", allow_abbrev=False, help="merge a LoRA adapter into its base model",
                                description="Merge the LoRA adapter in ADAPTER_DIR into its base (named in "
                                "adapter_config.json) in 16/32-bit; the result loads without PEFT.")
    merge.add_argument("adapter_dir", metavar="ADAPTER_DIR")
    merge.add_argument("--out", required=True, metavar="DIR", help="new directory for the merged model")
    merge.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    merge.add_argument("--base", help="base model to merge into, if not the one the adapter names")
    report = commands.add_parser("report", allow_abbrev=False, help="write RUN_DIR/report.html with plots",
                                 description="Write RUN_DIR/report.html and PNG plots for a run, finished or not.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--no-samples", action="store_true", help="skip the models' answers to held-out prompts")
    push = commands.add_parser("push", allow_abbrev=False, help="push a run's stages to the Hugging Face Hub",
                               description="Push every finished stage of RUN_DIR with its model card, as the "
                               "recipe's hub section says (again, after a failed push).")
    push.add_argument("run_dir", metavar="RUN_DIR")
    push.add_argument("--repo-id", help="push to this repo instead of the recipe's hub.repo_id")


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


def _add_export_demo_parsers(commands: argparse._SubParsersAction) -> None:
    """Run the model where people run Zephyr: a GGUF for llama.cpp / LM Studio / Ollama, a browser demo."""
    export = commands.add_parser("export", allow_abbrev=False, help="write a GGUF for llama.cpp, LM Studio, Ollama",
                                 description="Write MODEL_DIR (a merged model, a stage or a run directory, whose "
                                 "final model is used) as one GGUF file, with an Ollama Modelfile and a README "
                                 "snippet beside it (docs/export.md).")
    export.add_argument("model_dir", metavar="MODEL_DIR")
    export.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the file to write")
    export.add_argument("--quant", default="f16", metavar="TYPE", help="f16 (default), q8_0 or q4_k_m")
    export.add_argument("--name", help="model name in the metadata and the README (default: from the run)")
    export.add_argument("--license", help="license in the metadata (default: the recipe's hub.license, else "
                        "apache-2.0, Mistral-7B's)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT.gguf and its Modelfile/README")
    demo = commands.add_parser("demo", allow_abbrev=False,
                               help="Gradio chat in the browser, SFT and final side by side",
                               description="Chat with RUN_DIR's final model in the browser (streaming, system "
                               "prompt, sampling controls); the side-by-side tab answers with the SFT and the final "
                               "model at once (docs/demo.md).")
    demo.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a single model directory)")
    demo.add_argument("--port", type=int, help="port (default: Gradio's 7860, or the next free one)")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    demo.add_argument("--share", action="store_true", help="also a temporary public gradio.live link")
    demo.add_argument("--max-new-tokens", type=int, default=256, help="starting value of the control")
    demo.add_argument("--temperature", type=float, default=0.7, help="starting value of the control")
    demo.add_argument("--greedy", action="store_true", help="start with sampling off")


def _export(args: argparse.Namespace) -> int:
    from zephyr_train.export.to_gguf import export

    done = export(args.model_dir, args.gguf, args.quant, args.overwrite, args.name, args.license)
    print(f"exported {done.model_dir} -> {done.path} ({done.quant}, {done.tensors} tensors, "
          f"{done.size / 2**20:.1f} MiB, {done.seconds:.1f} s)")
    for path in done.companions:
        print(f"  {path}")
    for note in done.notes:
        print(f"note: {note}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from zephyr_train.inference.chat import Sampling
    from zephyr_train.publish.demo import run_demo

    defaults = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, do_sample=not args.greedy)
    run_demo(args.run_dir, port=args.port, host=args.host, share=args.share, defaults=defaults)
    return 0


def _load(args: argparse.Namespace, command: str):
    """The recipe from RECIPE or from a handbook --config, through the preflight's rules and data checks
    (every stage for `run`: a DPO mistake must not wait for SFT to finish)."""
    config = getattr(args, "config", None)
    if config and args.recipe and "=" in args.recipe:  # `--config FILE key=value`: no RECIPE
        args.recipe, args.overrides = None, [args.recipe, *args.overrides]
    if (args.recipe is None) == (config is None):
        raise UserError(f"{command}: give one of RECIPE or --config FILE (an alignment-handbook config)")
    if config:
        from zephyr_train.stages.handbook import load_handbook

        recipe = load_handbook(config, command, args.overrides)
    else:
        recipe = load_recipe(args.recipe, args.overrides)
    from zephyr_train.preflight.check import before_stage

    before_stage(recipe, tuple(KINDS) if command == "run" else (command,))
    return recipe


def _stage(args: argparse.Namespace) -> int:
    """Any registered stage kind's subcommand: `zephyr-train sft|dpo RECIPE`."""
    recipe = _load(args, args.command)
    from zephyr_train.pipeline.run import run_stage

    run_stage(recipe, args.command, args.overrides, overwrite=args.overwrite)
    return 0


def _run(args: argparse.Namespace) -> int:
    recipe = _load(args, "run")
    from zephyr_train.pipeline.run import run_pipeline

    run_pipeline(recipe, args.overrides, force=args.force)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from zephyr_train.inference.chat import Sampling, run_chat

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        top_k=args.top_k, do_sample=not args.greedy, repetition_penalty=args.repetition_penalty)
    run_chat(args.model_dir, args.prompt, args.system, sampling, args.seed)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from zephyr_train.inference.merge import merge_command

    print(f"merged model saved in {merge_command(args.adapter_dir, args.out, args.dtype, args.base)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from zephyr_train.publish.report import write_report

    print(f"report: {write_report(args.run_dir, samples=not args.no_samples)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from zephyr_train.publish.hub import push_run

    return 0 if push_run(args.run_dir, args.repo_id) else 1


def _check(args: argparse.Namespace) -> int:
    from zephyr_train.preflight import check as preflight
    from zephyr_train.preflight import intended, launcher
    from zephyr_train.preflight.show import show

    recipe = load_recipe(args.recipe, args.overrides)
    config, gpus, source = intended.choose(recipe, args.accelerate_config, args.gpus)
    launch = launcher.read(config) if config else None
    hardware = preflight.hardware_from(gpus, args.gpu_memory, args.gpu, launch or launcher.Launch("<none>"))
    report = preflight.check(recipe, launch, hardware)
    print("\n".join(([source] if source else []) + report.lines))
    if args.show:
        print("\n".join(show(recipe, args.show)))
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
    if report.fits and launch is not None:
        print("launch it: " + intended.launch_command(recipe, launch.source, hardware.gpus, args.overrides))
    return 3 if report.fits is False else 0


def _env(args: argparse.Namespace) -> int:
    from zephyr_train.preflight.environment import report_lines

    print("\n".join(report_lines()))
    return 0


def _data(args: argparse.Namespace) -> int:
    from zephyr_train.data.curation.command import run_command

    run_command(args)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from zephyr_train.eval.command import run_command

    return run_command(args)


COMMANDS = {**{kind: _stage for kind in KINDS}, "run": _run, "check": _check, "chat": _chat, "merge": _merge,
            "report": _report, "push": _push, "data": _data, "export": _export, "demo": _demo,
            "eval": _eval, "env": _env}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`sft r.yaml --overwrite sft.seed=1`); argparse leaves those over
    unknown = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
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
