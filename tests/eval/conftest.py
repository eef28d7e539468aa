"""Small inputs for the eval tests, written here: MT-Bench questions in FastChat's question.jsonl format and
judge prompts in FastChat's judge_prompts.jsonl format (our own wording, the same names and fields)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a short poem about rain.", "Now make it rhyme."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2 + 3?", "And that times 4?"],
     "reference": ["5", "20"]},
    {"question_id": 131, "category": "extraction", "turns": ["Give the year in: born 1990.", "And the decade?"]},
    {"question_id": 141, "category": "reasoning", "turns": ["Is every square a rectangle?", "And the converse?"]},
]
PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "You grade one answer.", "output_format": "[[rating]]",
     "prompt_template": "QUESTION: {question}\nANSWER: {answer}\nGive a rating as [[rating]]."},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You grade one answer against a reference.",
     "output_format": "[[rating]]",
     "prompt_template": "QUESTION: {question}\nREFERENCE: {ref_answer_1}\nANSWER: {answer}\nRate."},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "You grade the second answer.",
     "output_format": "[[rating]]",
     "prompt_template": "Q1: {question_1}\nA1: {answer_1}\nQ2: {question_2}\nA2: {answer_2}\nRate turn 2."},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "You grade the second answer.",
     "output_format": "[[rating]]", "prompt_template": "Q1: {question_1}\nREF1: {ref_answer_1}\nA1: {answer_1}\n"
     "Q2: {question_2}\nREF2: {ref_answer_2}\nA2: {answer_2}\nRate turn 2."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-inputs")
    return {"questions": write_jsonl(folder / "question.jsonl", QUESTIONS),
            "prompts": write_jsonl(folder / "judge_prompts.jsonl", PROMPTS)}


@pytest.fixture(scope="session")
def generator(tiny_model_dir):
    """One transformers generator on the tiny model for the whole session (loading it once)."""
    from zephyr_train.eval.generation import Generator

    return Generator(tiny_model_dir, "transformers", batch_size=2)
