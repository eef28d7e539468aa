"""`zephyr-train data ultrafeedback`: raw UltraFeedback -> ultrafeedback_binarized preference pairs.

Per prompt, in order (each counted in the report):
1. not TruthfulQA (only with `--drop-truthfulqa`, as the published set did later): `source` names
   TruthfulQA.
2. has a prompt: a non-empty `instruction`.
3. clean text: CRLF line ends and whole texts written with literal `\n` escapes are repaired (counted
   as changes; see `text.py`).
4. non-empty answers: completions with an empty response are left out (a change); a prompt with fewer
   than two answers left is removed.
5. valid pair: each completion with a non-empty response gets a score: the mean of its numeric
   aspect ratings (the paper's rule) or, with `--score overall`, its `overall_score`. Ratings of
   "N/A" or missing are left out of the mean (counted as a change); a completion with none is
   unscored. Chosen = the highest score (the first such completion on a tie); rejected = a seeded
   random pick among the completions scoring strictly lower. A prompt with no scored completion is
   removed here. A rating that is neither a number nor "N/A" makes a corrupt row.
6. scores differ: a prompt whose scored completions all tie is removed (a tie is no preference; ~11% of
   the published pairs have score_chosen == score_rejected).
Then the engine (`curation.py`) drops duplicate prompts and splits off `--test-size` prompts, so
no test prompt is ever in train. Columns: `prompt`, `prompt_id`, `chosen`, `rejected` (user turn +
answer), `messages` (= chosen), `score_chosen`, `score_rejected`; train_sft/test_sft are the same
rows, train_gen/test_gen the same with only the prompt message.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from zephyr_train.data.curation.engine import CorruptRow, Kind, example, sha256_hex
from zephyr_train.data.curation.text import repair

TRUTHFULQA, PROMPT, PAIR = "not TruthfulQA", "has a prompt", "valid pair"
TEXT, ANSWERED, DISTINCT = "clean text", "non-empty answers", "scores differ"
NA = {"n/a", "na", ""}


def rating(value: Any, what: str) -> float | None:
    """A rating as a float; None for "N/A" or missing; CorruptRow for anything else."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NA):
        return None
    if isinstance(value, bool):
        raise CorruptRow(f"{what} is {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CorruptRow(f"{what} is {example(value)!r}, not a number") from None
    if not math.isfinite(number):
        raise CorruptRow(f"{what} is {value!r}, not a finite number")
    return number


def score(completion: dict, by: str, i: int) -> tuple[float | None, bool]:
    """(score or None when unscored, whether some rating was N/A or missing)."""
    if by == "overall":
        value = rating(completion.get("overall_score"), f"completions[{i}].overall_score")
        return value, value is None
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        return None, True
    ratings = []
    for aspect, note in annotations.items():
        if not isinstance(note, dict):
            raise CorruptRow(f"completions[{i}].annotations.{aspect} is not an object")
        ratings.append(rating(note.get("Rating"), f"completions[{i}].annotations.{aspect}.Rating"))
    numbers = [r for r in ratings if r is not None]
    return (sum(numbers) / len(numbers) if numbers else None), len(numbers) < len(ratings) or not ratings


def process(row: dict, options: dict) -> tuple[str, Any, Any]:
    """One raw row -> ("drop", rule, example) or ("keep", record, [(rule, example) of changes])."""
    source, prompt, completions = row["source"], row["instruction"], row["completions"]
    if options["drop_truthfulqa"] and isinstance(source, str) and "truthful" in source.lower():
        return "drop", TRUTHFULQA, f"source {source!r}: {example(prompt)}"
    if not isinstance(prompt, str) or not isinstance(completions, list):
        raise CorruptRow("'instruction' is not a string or 'completions' not a list")
    if not prompt.strip():
        return "drop", PROMPT, f"empty instruction (source {source!r})"
    prompt, fixes = repair(prompt.strip())
    scored, partial, empty = [], [], 0
    for i, completion in enumerate(completions):
        if not isinstance(completion, dict) or not isinstance(completion.get("response", ""), str):
            raise CorruptRow(f"completions[{i}] is not an object with a string response")
        value, missing = score(completion, options["score"], i)
        if missing:
            partial.append(i)
        response, repaired = repair(completion.get("response", "").strip())
        fixes += [f for f in repaired if f not in fixes]
        if not response.strip():
            empty += 1
        elif value is not None:
            scored.append((value, response.strip()))
    prompt_id = sha256_hex(prompt)
    answered = len(completions) - empty
    if answered < 2:
        return "drop", ANSWERED, f"{answered} non-empty answer(s) of {len(completions)}: {example(prompt)}"
    if len(scored) < 2:
        return "drop", PAIR, f"{len(scored)} scored completion(s) with an answer: {example(prompt)}"
    best = max(value for value, _ in scored)
    chosen = next(c for c in scored if c[0] == best)
    lower = [c for c in scored if c[0] < best]
    if not lower:
        return "drop", DISTINCT, f"{len(scored)} scored completion(s), all at {best:g}: {example(prompt)}"
    seed = int.from_bytes(hashlib.sha256(f"{options['seed']}:{prompt_id}".encode()).digest()[8:16], "big")
    rejected = random.Random(seed).choice(lower)
    user = {"role": "user", "content": prompt}
    pair = [user, {"role": "assistant", "content": chosen[1]}]
    record = {"prompt": prompt, "prompt_id": prompt_id, "chosen": pair, "rejected":
              [user, {"role": "assistant", "content": rejected[1]}], "messages": pair,
              "score_chosen": chosen[0], "score_rejected": rejected[0]}
    changes = [(TEXT, f"{', '.join(fixes)}: {example(prompt)}")] if fixes else []
    if empty:
        changes.append((ANSWERED, f"{empty} empty answer(s) left out: {example(prompt)}"))
    if partial:
        changes.append((PAIR, f"N/A or missing ratings left out for completions {partial}: {example(prompt)}"))
    return "keep", record, changes


def features() -> Any:
    from datasets import Features, List, Value

    messages = List({"content": Value("string"), "role": Value("string")})
    return Features({"prompt": Value("string"), "prompt_id": Value("string"), "chosen": messages,
                     "rejected": messages, "messages": messages, "score_chosen": Value("float64"),
                     "score_rejected": Value("float64")})


KIND = Kind(name="UltraFeedback", required=("source", "instruction", "completions"),
            rules=(TRUTHFULQA, PROMPT, TEXT, ANSWERED, PAIR, DISTINCT),
            process=process, features=features, splits=("train_prefs", "test_prefs"), also=("sft", "gen"))
