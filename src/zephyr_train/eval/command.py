"""`zephyr-train eval MODEL_DIR --bench mt-bench|alpaca-eval|lm-eval --out DIR`: one benchmark, one model.

Everything the user can get wrong (the model folder, the question file's shape, the judge's key or
endpoint, the judge prompts, task names) is checked before any model loads; the run itself is
resumable, so the same command after a crash or a rate limit continues where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from zephyr_train.config.evaluation import (
    BACKENDS,
    BENCHES,
    DEFAULT_ALPACA_PROMPTS,
    DEFAULT_QUESTIONS,
    MT_BENCH_MAX_NEW_TOKENS,
    PAPER_TASKS,
)
from zephyr_train.errors import UserError
from zephyr_train.eval import alpaca_eval, harness, mt_bench
from zephyr_train.eval import questions as q
from zephyr_train.eval.judge import JudgeSettings, check_configured
from zephyr_train.eval.mt_bench import MtBenchJob
from zephyr_train.eval.questions import load_instructions
from zephyr_train.inference.chat import check_model_dir


def add_parser(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("eval", allow_abbrev=False, help="MT-Bench, AlpacaEval outputs or lm-eval on a model",
                             description="Evaluate MODEL_DIR the way Zephyr was evaluated. MT-Bench: answers "
                             "both turns, then a judge (any OpenAI-compatible endpoint; key from OPENAI_API_KEY) "
                             "grades every turn. Resumable: re-run the same command after a failure.")
    ev.add_argument("model_dir", metavar="MODEL_DIR")
    ev.add_argument("--bench", required=True, choices=BENCHES)
    ev.add_argument("--out", required=True, metavar="DIR", help="folder for answers, verdicts and summary.json")
    ev.add_argument("--questions", default=DEFAULT_QUESTIONS, metavar="FILE|HUB_ID",
                    help="MT-Bench questions, FastChat question.jsonl format (default: fastchat, FastChat's own 80, "
                    "downloaded once and cached)")
    ev.add_argument("--judge-model", default="gpt-4", help="judge model name (default: gpt-4, as MT-Bench)")
    ev.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint (vLLM, TGI ...); default "
                    "api.openai.com")
    ev.add_argument("--judge-prompts", default="fastchat", metavar="FILE", help="judge prompts, FastChat "
                    "judge_prompts.jsonl format (default: fastchat, FastChat's own)")
    ev.add_argument("--judge-parallel", type=int, default=8, metavar="N", help="judge requests in flight")
    ev.add_argument("--no-judge", action="store_true", help="generate answers only")
    ev.add_argument("--reference-answers", default="fastchat", metavar="FILE|fastchat|questions",
                    help="references for math, reasoning, coding, FastChat reference_answer format (default: "
                    "fastchat, GPT-4's gpt-4.jsonl as FastChat judges; `questions`: each question's own `reference`)")
    ev.add_argument("--retry-failed", action="store_true", help="ask the judge again for verdicts saved at -1")
    ev.add_argument("--max-new-tokens", type=int, help=f"per answer (default: {MT_BENCH_MAX_NEW_TOKENS} MT-Bench, "
                    "2048 AlpacaEval)")
    ev.add_argument("--prompts", default=DEFAULT_ALPACA_PROMPTS, metavar="FILE|HUB_ID",
                    help=f"AlpacaEval instructions (default: {DEFAULT_ALPACA_PROMPTS})")
    ev.add_argument("--annotator", help="alpaca_eval annotators_config (default: the library's)")
    ev.add_argument("--tasks", default=",".join(PAPER_TASKS), help="lm-eval tasks, comma-separated (default: the "
                    "paper's)")
    ev.add_argument("--include-path", metavar="DIR", help="folder of local lm-eval task YAMLs")
    ev.add_argument("--num-fewshot", type=int, help="lm-eval shots (default: leaderboard's per task)")
    ev.add_argument("--limit", type=int, help="first N questions / instructions / documents per task")
    ev.add_argument("--backend", default="auto", choices=BACKENDS, help="vllm needs a GPU (default: auto)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--model-id", help="name in the answer files (default: MODEL_DIR's folder name)")
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument("--overwrite", action="store_true", help="discard cached answers made with other settings")


def run_command(args: argparse.Namespace) -> int:

    model_dir = check_model_dir(args.model_dir)
    out = Path(args.out)
    model_id = args.model_id or model_dir.resolve().name
    for name in ("batch_size", "judge_parallel", "max_new_tokens", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.bench == "lm-eval":

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        summary = harness.run(model_dir, out, tasks, args.include_path, args.num_fewshot, args.limit, args.batch_size)
        print(harness.headline(summary))
    elif args.bench == "alpaca-eval":

        instructions = load_instructions(args.prompts, args.limit)
        summary = alpaca_eval.run(model_dir, out, instructions, model_id, args.max_new_tokens or 2048, args.backend,
                                  args.batch_size, args.seed, args.overwrite, args.annotator)
        print(alpaca_eval.headline(summary))
    else:

        job = mt_bench_job(args, model_dir, out, model_id)
        summary = mt_bench.run(job, overwrite=args.overwrite)
        print(mt_bench.headline(summary))
    print(f"summary: {out / 'summary.json'}")
    return 0


def mt_bench_job(args: argparse.Namespace, model_dir: Path, out: Path, model_id: str):
    """Questions, judge prompts, references and the judge's key or endpoint, all checked before any model loads."""

    judge = None if args.no_judge else JudgeSettings(args.judge_model, args.judge_base_url, args.judge_parallel)
    if judge is not None:
        check_configured(judge)
    given = q.load_mt_bench(args.questions, args.limit, args.judge_prompts, args.reference_answers, judge is not None)
    argv = [a for a in sys.argv[1:] if a not in ("--overwrite", "--retry-failed")] if sys.argv[1:2] == ["eval"] \
        else ["eval", *_rebuild(args)]
    return MtBenchJob(model_dir, out, given.questions, model_id, args.max_new_tokens or MT_BENCH_MAX_NEW_TOKENS, judge,
                      given.prompts, given.references, args.backend, args.batch_size, args.seed,
                      resume_command="zephyr-train " + shlex.join(argv), question_set_size=given.set_size,
                      retry_failed=args.retry_failed)


def _rebuild(args: argparse.Namespace) -> list[str]:
    return [args.model_dir, "--bench", args.bench, "--out", args.out]
