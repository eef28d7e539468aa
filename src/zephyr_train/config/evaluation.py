"""A recipe's top-level `eval:` section: which benchmarks the run's last stage runs, and with what judge.

Kept apart from `recipe.py` (which only reads and writes it) so the evaluation settings grow here.
Validated with the rest of the recipe, before torch is imported: a misspelt bench or key is a one-line
error in well under a second. The judge's key is never a recipe key: it comes from OPENAI_API_KEY.

    eval:
      benches: [mt-bench, alpaca-eval, lm-eval]
      models: [sft, dpo]               # the paper's ablation: SFT alone, then SFT + DPO (default: every stage)
      backend: auto                    # auto | transformers | vllm
      batch_size: 8
      judge: {model: gpt-4, base_url: null, parallel: 8, retries: 5, retry_failed: false}
      mt_bench: {questions: fastchat, judge_prompts: fastchat, reference_answers: fastchat,
                 max_new_tokens: 1024, limit: null}
      alpaca_eval: {prompts: tatsu-lab/alpaca_eval, max_new_tokens: 2048, limit: null}
      lm_eval: {tasks: [arc_challenge, hellaswag, mmlu, truthfulqa_mc2], include_path: null,
                num_fewshot: null, limit: null}
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from zephyr_train.errors import UserError

BENCHES = ("mt-bench", "alpaca-eval", "lm-eval")
BACKENDS = ("auto", "transformers", "vllm")
DEFAULT_QUESTIONS = "fastchat"  # FastChat's own question.jsonl (eval/fastchat_files.py)
MT_BENCH_MAX_NEW_TOKENS = 1024  # FastChat gen_model_answer's --max-new-token default
DEFAULT_ALPACA_PROMPTS = "tatsu-lab/alpaca_eval"
# The Open LLM Leaderboard (v1) settings the Zephyr paper's table of ARC / HellaSwag / MMLU / TruthfulQA used.
PAPER_TASKS = ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2")


@dataclass
class Judge:
    """Any OpenAI-compatible chat-completions endpoint; the key is read from OPENAI_API_KEY only."""

    model: str = "gpt-4"
    base_url: str | None = None  # None: api.openai.com; else a vLLM / TGI / other server's .../v1
    parallel: int = 8  # requests in flight at once
    retries: int = 5  # per request, with exponential backoff from 2 s; then $ERROR$ (score -1), as FastChat
    retry_failed: bool = False  # a re-run asks again for the verdicts saved at -1


@dataclass
class MtBench:
    questions: str = DEFAULT_QUESTIONS  # `fastchat` (its 80 questions), a question.jsonl file, or a Hub dataset id
    judge_prompts: str | None = "fastchat"  # `fastchat` (null too): its judge_prompts.jsonl; or a file
    # `fastchat` (GPT-4's reference_answer/gpt-4.jsonl, as FastChat judges), a file in that format, or
    # `questions`: each question's own `reference` field (only when asked for: it changes the score)
    reference_answers: str | None = "fastchat"  # null: `fastchat`
    max_new_tokens: int = MT_BENCH_MAX_NEW_TOKENS
    limit: int | None = None  # first N questions only
    answers_only: bool = False  # True: generate the answers, judge nothing


@dataclass
class AlpacaEval:
    prompts: str = DEFAULT_ALPACA_PROMPTS  # JSON/JSONL with `instruction` (and `dataset`), or a Hub dataset id
    max_new_tokens: int = 2048
    limit: int | None = None
    annotator: str | None = None  # alpaca_eval annotators_config; None: the library's default


@dataclass
class LmEval:
    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    include_path: str | None = None  # a folder of lm-eval task YAMLs (local tasks)
    num_fewshot: int | None = None  # None: the leaderboard's shots for the paper's tasks, the task's own else
    limit: int | None = None  # first N documents per task


@dataclass
class Evaluation:
    benches: list[str] = field(default_factory=lambda: ["mt-bench"])
    models: list[str] | None = None  # stage kinds to evaluate; None: every stage the recipe trains
    backend: str = "auto"
    batch_size: int = 8
    seed: int = 42
    judge: Judge = field(default_factory=Judge)
    mt_bench: MtBench = field(default_factory=MtBench)
    alpaca_eval: AlpacaEval = field(default_factory=AlpacaEval)
    lm_eval: LmEval = field(default_factory=LmEval)


_NESTED = {"judge": Judge, "mt_bench": MtBench, "alpaca_eval": AlpacaEval, "lm_eval": LmEval}
_FORBIDDEN = ("api_key", "key", "token")


def _coerce(value: Any, annotation: str, where: str, source: str) -> Any:
    kinds = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise UserError(f"{source}: {where} must not be empty")
    base = kinds[0]
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    elif base == "str":
        if isinstance(value, str) and value:
            return value
    elif base.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return value
    else:
        return value
    raise UserError(f"{source}: {where} expects {annotation.replace('None', 'null')}, got {value!r}")


def _build(cls: type, raw: Any, source: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where.rstrip('.')} must be a mapping of keys, got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key in _FORBIDDEN:
            raise UserError(f"{source}: {where}{key}: keys never go in a recipe; export OPENAI_API_KEY instead")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(known))}"
            raise UserError(f"{source}: unknown key '{where}{key}'; {hint}")
        if key in _NESTED:
            values[key] = _build(_NESTED[key], value or {}, source, f"{where}{key}.")
        else:
            values[key] = _coerce(value, str(known[key].type), f"{where}{key}", source)
    return cls(**values)


def build_evaluation(raw: Any, source: str, stages: list[str]) -> Evaluation:
    """The `eval:` section as an `Evaluation`; every problem is a one-line UserError naming the key."""
    spec = _build(Evaluation, raw if raw is not None else {}, source, "eval.")
    for bench in spec.benches:
        if bench not in BENCHES:
            close = difflib.get_close_matches(bench, BENCHES, n=1)
            raise UserError(f"{source}: eval.benches: unknown bench {bench!r}; "
                            + (f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(BENCHES)}"))
    if not spec.benches:
        raise UserError(f"{source}: eval.benches is empty; list at least one of {', '.join(BENCHES)}")
    if spec.backend not in BACKENDS:
        raise UserError(f"{source}: eval.backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    for kind in spec.models or []:
        if kind not in stages:
            raise UserError(f"{source}: eval.models names {kind!r}, which this recipe does not train; "
                            f"choose from {', '.join(stages) or 'no stage'}")
    if spec.batch_size < 1 or spec.judge.parallel < 1:
        raise UserError(f"{source}: eval.batch_size and eval.judge.parallel must be at least 1")
    if "lm-eval" in spec.benches and not spec.lm_eval.tasks:
        raise UserError(f"{source}: eval.lm_eval.tasks is empty; name lm-eval tasks such as arc_challenge")
    return spec


def to_dict(spec: Evaluation) -> dict[str, Any]:
    return dataclasses.asdict(spec)
