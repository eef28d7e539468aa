"""`zephyr-train data ultrachat`: raw UltraChat (`id`, `data`) -> the ultrachat_200k SFT set.

Per dialogue, in order (each counted in the report):
1. valid dialogue: `data` is a list of strings (else a corrupt row); turns alternate user, assistant
   starting with the user (the raw schema's order); no empty turn; at least one answer. An odd
   trailing user turn has no answer to learn from and is dropped (counted as a change).
2. truecased: sentence-initial lowercase letters and a lone "i" fixed (`truecase.py`).
3. no AI disclaimer: dialogues whose assistant turns say they lack feelings, opinions or personal
   experience, or "As an AI language model ...", are removed, as for ultrachat_200k. The patterns
   are `DISCLAIMERS`, regular expressions matched case-insensitively anywhere in an assistant
   turn; `--disclaimers FILE` replaces them.
Then the engine (`curation.py`) drops duplicate prompts, samples `--size` dialogues (seeded) and
splits off `--test-size` of them. Output columns: `prompt` (the first user turn), `prompt_id`
(SHA-256 hex of the prompt), `messages`; `train_gen`/`test_gen` hold only the prompt message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zephyr_train.data.curation.engine import CorruptRow, Kind, example, sha256_hex
from zephyr_train.data.curation.truecase import truecase
from zephyr_train.errors import UserError

VALID, TRUECASED, DISCLAIMER = "valid dialogue", "truecased", "no AI disclaimer"
_NOT = r"(?:do not|don['’]t|cannot|can['’]t|am not able to|am unable to|lack the ability to)"
_FEELINGS = r"(?:personal |real |any |human )?(?:feelings|emotions|opinions|beliefs|preferences|desires|" \
            r"(?:personal |subjective )?experiences?|consciousness|personal views?|likes or dislikes)"
DISCLAIMERS = (
    r"\bas an? (?:ai|artificial intelligence)(?: language model| model| assistant| chatbot)?\b",
    r"\bas a language model\b",
    r"\bi(?: am|['’]m) (?:just |only )?an? (?:ai|artificial intelligence|language model|machine learning model)\b",
    rf"\bi {_NOT} (?:have|possess|hold|form|express) {_FEELINGS}",
    rf"\bi {_NOT} (?:feel|experience) (?:emotions|feelings|things)",
    r"\bi am not capable of (?:feeling|having|experiencing|forming) (?:emotions|feelings|opinions|beliefs)",
    r"\bi have no (?:personal )?(?:feelings|emotions|opinions|beliefs|preferences|personal experiences?)\b",
)


def load_disclaimers(path: str | None) -> list[str]:
    """The default patterns, or those of FILE: one regular expression a line, # starts a comment."""
    if path is None:
        return list(DISCLAIMERS)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise UserError(f"--disclaimers {path}: {err.strerror}") from None
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise UserError(f"--disclaimers {path}: {pattern!r} is not a regular expression ({err})") from None
    return patterns


def compile_disclaimers(patterns: list[str]) -> re.Pattern | None:
    """One pattern for all, matched against lowercased turns (much faster than re.IGNORECASE), so the
    patterns' own letters are lowercased too, escapes such as \\S or \\W excepted."""
    lowered = [re.sub(r"(?<!\\)[A-Z]", lambda m: m.group(0).lower(), p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in lowered)) if patterns else None


def process(row: dict, options: dict) -> tuple[str, Any, Any]:
    """One raw row -> ("drop", rule, example) or ("keep", record, [(rule, example) of changes])."""
    turns = row["data"]
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise CorruptRow(f"'data' is not a list of strings: {example(turns)}")
    turns = [t.strip() for t in turns]
    changes = []
    if any(not t for t in turns):
        return "drop", VALID, f"empty turn {turns.index('') + 1} of {len(turns)}: {example(turns)}"
    if len(turns) % 2:
        changes.append((VALID, f"trailing user turn dropped: {example(turns[-1])}"))
        turns = turns[:-1]
    if not turns:
        return "drop", VALID, "no assistant turn"
    cased = [truecase(t) for t in turns]
    changed = next((i for i, (a, b) in enumerate(zip(turns, cased, strict=True)) if a != b), None)
    if changed is not None:
        changes.append((TRUECASED, _diff(turns[changed], cased[changed])))
    disclaimers = options["_disclaimer_regex"]
    for t in cased[1::2] if disclaimers else ():
        found = disclaimers.search(t.lower())
        if found:
            return "drop", DISCLAIMER, example(t[max(0, found.start() - 60):found.end() + 60])
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(cased)]
    return "keep", {"prompt": cased[0], "prompt_id": sha256_hex(cased[0]), "messages": messages}, changes


def _diff(before: str, after: str) -> str:
    """'...before...' -> '...after...' around the first changed character."""
    at = 0
    while before[at:at + 256] == after[at:at + 256]:  # compare in blocks: a char loop is slow on long turns
        at += 256
    at = next(i for i in range(at, at + 256) if before[i] != after[i])
    lo = max(0, at - 50)
    return f"{example(before[lo:at + 50])!r} -> {example(after[lo:at + 50])!r}"


def features() -> Any:
    from datasets import Features, List, Value

    return Features({"prompt": Value("string"), "prompt_id": Value("string"),
                     "messages": List({"content": Value("string"), "role": Value("string")})})


KIND = Kind(name="UltraChat", required=("data",), rules=(VALID, TRUECASED, DISCLAIMER), process=process,
            features=features, splits=("train_sft", "test_sft"), also=("gen",))
