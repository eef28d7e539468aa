"""Small inputs for the eval tests, written here in FastChat's file shapes (our own wording): MT-Bench questions
as in `data/mt_bench/question.jsonl` (one per category, FastChat's ids), judge prompts as in
`data/judge_prompts.jsonl` (the same names, fields and placeholders) and reference answers as in
`data/mt_bench/reference_answer/gpt-4.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# One question per MT-Bench category; math, reasoning and coding carry a short `reference` of their own, as
# FastChat's question.jsonl does, which FastChat does not judge with (it uses gpt-4.jsonl's answers).
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a short poem about rain.", "Now make it rhyme."]},
    {"question_id": 91, "category": "roleplay", "turns": ["Pretend to be a pirate. Greet me.", "Now say goodbye."]},
    {"question_id": 101, "category": "reasoning", "turns": ["Is every square a rectangle?", "And the converse?"],
     "reference": ["yes", "no"]},
    {"question_id": 111, "category": "math", "turns": ["What is 2 + 3?", "And that times 4?"],
     "reference": ["5", "20"]},
    {"question_id": 121, "category": "coding", "turns": ["Write a function adding two numbers.", "Now in C."],
     "reference": ["def add", "int add"]},
    {"question_id": 131, "category": "extraction", "turns": ["Give the year in: born 1990.", "And the decade?"]},
    {"question_id": 141, "category": "stem", "turns": ["Why is the sky blue?", "And sunsets red?"]},
    {"question_id": 151, "category": "humanities", "turns": ["Who wrote Hamlet?", "When?"]},
]
NEED_REF_IDS = {101, 111, 121}
# GPT-4's answers, in reference_answer/gpt-4.jsonl's shape: longer than the questions' own `reference`.
REFERENCES = [{"question_id": qid, "answer_id": f"ref{qid}", "model_id": "gpt-4",
               "choices": [{"index": 0, "turns": [f"GPT4-REF {qid} turn one: worked answer.",
                                                  f"GPT4-REF {qid} turn two: worked answer."]}],
               "tstamp": 1686286924.0} for qid in sorted(NEED_REF_IDS)]
PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "You grade one answer.",
     "prompt_template": "[Task]\nGrade the reply below, then write [[rating]].\n\n[Question]\n{question}\n\n"
     "[Reply]\n{answer}\n[End]", "description": "general questions", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You grade one answer against a reference.",
     "prompt_template": "[Task]\nCompare with the reference.\n\n[Question]\n{question}\n\n[Reference]\n"
     "{ref_answer_1}\n\n[Reply]\n{answer}\n[End]", "description": "questions with a reference", "category": "math",
     "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "You grade the second reply only.",
     "prompt_template": "<|Talk|>\n\n### User:\n{question_1}\n\n### Bot:\n{answer_1}\n\n### User:\n{question_2}\n\n"
     "### Bot:\n{answer_2}\n\n<|End of talk|>", "description": "general questions", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "You grade the second reply only, "
     "against the reference.", "prompt_template": "<|Reference|>\n\n### User:\n{question_1}\n\n### Ref:\n"
     "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Ref:\n{ref_answer_2}\n\n<|Talk|>\n\n### User:\n"
     "{question_1}\n\n### Bot:\n{answer_1}\n\n### User:\n{question_2}\n\n### Bot:\n{answer_2}\n\n<|End of talk|>",
     "description": "questions with a reference", "category": "math", "output_format": "[[rating]]"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-inputs")
    return {"questions": write_jsonl(folder / "question.jsonl", QUESTIONS),
            "prompts": write_jsonl(folder / "judge_prompts.jsonl", PROMPTS),
            "references": write_jsonl(folder / "gpt-4.jsonl", REFERENCES)}


@pytest.fixture
def fastchat_cache(tmp_path, monkeypatch, eval_inputs) -> Path:
    """The cache as a first online run leaves it: the three FastChat files (here our fixtures) under
    ZEPHYR_TRAIN_CACHE/fastchat/COMMIT/."""
    from zephyr_train.eval import fastchat_files

    root = tmp_path / "cache"
    folder = root / "fastchat" / fastchat_files.COMMIT[:12]
    folder.mkdir(parents=True)
    for name in fastchat_files.FILES:
        key = {"question.jsonl": "questions", "judge_prompts.jsonl": "prompts", "gpt-4.jsonl": "references"}[name]
        (folder / name).write_bytes(eval_inputs[key].read_bytes())
    monkeypatch.setenv("ZEPHYR_TRAIN_CACHE", str(root))
    return folder


@pytest.fixture(scope="session")
def generator(tiny_model_dir):
    """One transformers generator on the tiny model for the whole session (loading it once)."""
    from zephyr_train.eval.generation import Generator

    return Generator(tiny_model_dir, "transformers", batch_size=2)
