"""The inputs of the benchmarks, read and checked before any model loads.

MT-Bench questions in FastChat's `question.jsonl` format (`question_id`, `category`, `turns` of 2,
optional `reference`), or a Hub dataset with those columns (lighteval/mt-bench) or
HuggingFaceH4/mt_bench_prompts' (`prompt_id`, `prompt`, `category`, `reference`); reference answers in
FastChat's `reference_answer/*.jsonl` format, judge prompts in FastChat's `judge_prompts.jsonl` format
(each by default FastChat's own file: see fastchat_files.py), and AlpacaEval instructions. A file in the
wrong shape is a one-line error naming the line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr_train.errors import UserError
from zephyr_train.eval import fastchat_files

# MT-Bench's generation temperature per category (FastChat llm_judge/common.py `temperature_config`);
# any other category samples at 0.7 like FastChat's default.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
DEFAULT_TEMPERATURE = 0.7
# Categories judged against a reference answer (FastChat's NEED_REF_CATS).
NEED_REF = ("math", "reasoning", "coding", "arena-hard-200")
# The judge prompts MT-Bench uses for single-answer grading: (plain, with reference) x (turn 1, turn 2).
PROMPT_NAMES = {(False, 1): "single-v1", (True, 1): "single-math-v1",
                (False, 2): "single-v1-multi-turn", (True, 2): "single-math-v1-multi-turn"}


@dataclass
class Question:
    question_id: int | str
    category: str
    turns: list[str]
    reference: list[str] | None = None

    @property
    def temperature(self) -> float:
        return TEMPERATURES.get(self.category, DEFAULT_TEMPERATURE)


@dataclass
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str
    output_format: str = "[[rating]]"
    extra: dict = field(default_factory=dict)


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {number}: not valid JSON ({err.msg}); each line is one {what} "
                            "object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object per line, got {type(row).__name__}")
        rows.append((number, row))
    if not rows:
        raise UserError(f"{path}: no {what} in the file")
    return rows


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def question_from(row: dict, where: str) -> Question:
    """One MT-Bench question from a FastChat row (lighteval/mt-bench) or a HuggingFaceH4/mt_bench_prompts row."""
    qid = row.get("question_id", row.get("prompt_id"))
    turns = row.get("turns", row.get("prompt"))
    if qid is None or isinstance(qid, bool) or not isinstance(qid, int | str):
        raise UserError(f"{where}: field question_id is missing or not an integer/string")
    if not isinstance(row.get("category"), str) or not row["category"]:
        raise UserError(f"{where}: field category is missing or not a string (e.g. \"writing\")")
    if not _strings(turns) or len(turns) != 2 or not all(t.strip() for t in turns):
        raise UserError(f"{where}: field turns must be a list of 2 non-empty strings (the user's two turns), "
                        f"got {json.dumps(turns)[:80]}")
    reference = row.get("reference") or None
    if reference is not None and (not _strings(reference) or not reference):
        raise UserError(f"{where}: field reference must be a list of strings (one reference answer per turn)")
    return Question(qid, row["category"], list(turns), list(reference) if reference else None)


def load_questions(source: str, limit: int | None = None) -> list[Question]:
    """Questions from FastChat's own question.jsonl (`fastchat`, the default), a file in its format, or a Hub
    dataset id (its train split)."""
    fastchat = source == fastchat_files.SOURCE
    path = fastchat_files.fastchat_file("question.jsonl") if fastchat else Path(source).expanduser()
    if path.suffix in (".jsonl", ".json") or path.exists():
        found = [question_from(row, f"{path} line {n}") for n, row in read_jsonl(path, "MT-Bench question")]
    else:
        found = [question_from(row, f"{source} row {i}") for i, row in enumerate(_hub_rows(source, "train"))]
    ids = [q.question_id for q in found]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{source}: question_id {dup!r} appears twice; each question needs its own id")
    return found[:limit] if limit else found


def _hub_rows(dataset_id: str, split: str) -> list[dict]:
    """A Hub dataset's rows (cached by `datasets`; offline, only what is already in the cache)."""
    try:
        from datasets import load_dataset

        return list(load_dataset(dataset_id, split=split))
    except Exception as err:  # noqa: BLE001 - any loading failure means the same thing to the user
        raise UserError(f"{dataset_id}: could not load it from the Hub ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120]}); pass a local file instead") from None


REFERENCES_OWN = "questions"  # --reference-answers value: each question's own `reference` field, said explicitly


def load_references(source: str | None, questions: list[Question]) -> dict[Any, list[str]]:
    """question_id -> reference turns for the questions judged against one: FastChat's GPT-4 answers by
    default (what FastChat judges with), a reference_answer file, or, only when asked for by name, each
    question's own `reference`. A math, reasoning or coding question without one is an error, as in FastChat."""
    source = source or fastchat_files.SOURCE
    if not any(x.category in NEED_REF for x in questions):  # nothing to fetch for a cut that needs none
        return {}
    if source == REFERENCES_OWN:
        refs = {x.question_id: x.reference for x in questions if x.reference}
    else:
        path = fastchat_files.fastchat_file("gpt-4.jsonl") if source == fastchat_files.SOURCE else Path(source)
        refs = _reference_rows(path.expanduser())
    for x in questions:
        if x.category in NEED_REF and len(refs.get(x.question_id) or []) < 2:
            where = "its `reference` field" if source == REFERENCES_OWN else source
            raise UserError(f"question {x.question_id!r} ({x.category}) has no reference answer for both turns in "
                            f"{where}; MT-Bench judges {', '.join(NEED_REF)} against one: pass --reference-answers "
                            "FILE (FastChat's reference_answer/gpt-4.jsonl format) that covers it")
    return {k: v for k, v in refs.items() if k in {x.question_id for x in questions}}


def _reference_rows(path: Path) -> dict[Any, list[str]]:
    refs = {}
    for n, row in read_jsonl(path, "reference answer"):
        try:
            turns = row["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"{path} line {n}: field choices[0].turns is missing (FastChat's "
                            "reference_answer format)") from None
        if "question_id" not in row or not _strings(turns):
            raise UserError(f"{path} line {n}: needs question_id and choices[0].turns, a list of strings")
        refs[row["question_id"]] = turns
    return refs


def load_judge_prompts(source: str | None) -> dict[str, JudgePrompt]:
    """The four single-grading prompts MT-Bench uses, by name, from a judge_prompts.jsonl file (default:
    FastChat's own)."""
    use_fastchat = source in (None, fastchat_files.SOURCE)
    path = fastchat_files.fastchat_file("judge_prompts.jsonl") if use_fastchat else Path(str(source)).expanduser()
    prompts = {}
    for n, row in read_jsonl(path, "judge prompt"):
        for key in ("name", "system_prompt", "prompt_template"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{path} line {n}: field {key} is missing or not a string (FastChat's "
                                "judge_prompts.jsonl format)")
        prompts[row["name"]] = JudgePrompt(row["name"], row["system_prompt"], row["prompt_template"],
                                           row.get("output_format", "[[rating]]"))
    missing = [name for name in PROMPT_NAMES.values() if name not in prompts]
    if missing:
        raise UserError(f"{path}: no judge prompt named {', '.join(missing)}; MT-Bench's single grading needs "
                        f"{', '.join(PROMPT_NAMES.values())}")
    odd = next((name for name in PROMPT_NAMES.values() if prompts[name].output_format != "[[rating]]"), None)
    if odd:
        raise UserError(f"{path}: judge prompt {odd} has output_format {prompts[odd].output_format!r}; single "
                        "grading reads a [[rating]] (FastChat refuses any other)")
    return prompts


def load_instructions(source: str, limit: int | None = None) -> list[dict]:
    """AlpacaEval instructions: a JSON list or JSONL of objects with `instruction` (and `dataset`), or a
    Hub dataset id (AlpacaEval's `alpaca_eval.json`)."""
    path = Path(source).expanduser()
    if path.exists() or path.suffix in (".json", ".jsonl"):
        if not path.is_file():
            raise UserError(f"{path}: AlpacaEval prompts file not found")
        text = path.read_text(encoding="utf-8")
        try:
            rows = json.loads(text)
            numbered = [(i, r) for i, r in enumerate(rows if isinstance(rows, list) else [rows])]
            label = "item"
        except json.JSONDecodeError:
            numbered, label = read_jsonl(path, "AlpacaEval instruction"), "line"
    else:
        numbered, label, path = list(enumerate(_alpaca_hub(source))), "row", Path(source)
    out = []
    for n, row in numbered:
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise UserError(f"{path} {label} {n}: field instruction is missing or empty")
        out.append({"instruction": row["instruction"], "dataset": str(row.get("dataset") or "custom")})
    if not out:
        raise UserError(f"{path}: no instructions in the file")
    return out[:limit] if limit else out


def _alpaca_hub(dataset_id: str) -> list[dict]:
    """AlpacaEval's evaluation set from the Hub: its alpaca_eval.json file (the dataset's loading script
    does not run under datasets 5)."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(dataset_id, "alpaca_eval.json", repo_type="dataset")).read_text())
    except Exception as err:  # noqa: BLE001
        raise UserError(f"{dataset_id}: could not download alpaca_eval.json ({type(err).__name__}); pass "
                        "--prompts FILE") from None


@dataclass
class MtBenchInputs:
    questions: list[Question]  # the ones asked: the set's first `limit`
    set_size: int  # the whole set's, so a cut run is labelled partial
    prompts: dict[str, JudgePrompt]
    references: dict[Any, list[str]]


def load_mt_bench(questions: str, limit: int | None, judge_prompts: str | None, reference_answers: str | None,
                  judged: bool) -> MtBenchInputs:
    """Everything MT-Bench reads, checked before any model loads; an answers-only run needs neither the
    prompts nor the references (so it runs offline on a local question file alone)."""
    every = load_questions(questions)
    asked = every[:limit] if limit else every
    if not judged:
        return MtBenchInputs(asked, len(every), {}, {})
    return MtBenchInputs(asked, len(every), load_judge_prompts(judge_prompts),
                         load_references(reference_answers, asked))
