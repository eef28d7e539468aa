"""MT-Bench end to end on the tiny model: answers in FastChat's format, judging through a loopback
OpenAI-compatible server (a test double at the one boundary that cannot exist here: the remote judge
API; see judge_server.py), aggregation, resume after interruptions, unparseable and failing verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, cli
from tests.eval.conftest import PROMPTS, QUESTIONS, write_jsonl
from tests.eval.judge_server import JudgeServer
from zephyr_train.errors import UserError
from zephyr_train.eval import mt_bench
from zephyr_train.eval import questions as q
from zephyr_train.eval.judge import JudgeSettings, parse_rating

SECRET = "sk-test-0123456789abcdefSECRET"


class Counting:
    """The real generator, counting the answers it makes and able to stop after N batches (a crash)."""

    def __init__(self, inner, crash_after: int | None = None) -> None:
        self.inner, self.backend, self.crash_after = inner, inner.backend, crash_after
        self.made: list = []

    def generate(self, requests, on_batch) -> None:
        def save(batch) -> None:
            if self.crash_after is not None and len(self.made) >= self.crash_after:
                raise KeyboardInterrupt
            self.made.extend(key for key, _ in batch)
            on_batch(batch)

        self.inner.generate(requests, save)


def job(out: Path, inputs: dict, judge_url: str | None = None, retries: int = 0) -> mt_bench.MtBenchJob:
    asked = q.load_questions(str(inputs["questions"]))
    settings = JudgeSettings("judge-x", judge_url, parallel=2, retries=retries, backoff_s=0.01) if judge_url else None
    return mt_bench.MtBenchJob(Path("unused"), out, asked, "tiny", max_new_tokens=6, judge=settings,
                               prompts=q.load_judge_prompts(str(inputs["prompts"])),
                               references=q.load_references(None, asked), resume_command="zephyr-train eval ...")


def rating_by_question(number: int, user: str) -> tuple[int, str]:
    """8 for turn 1 and 6 for turn 2 of every question, but 4 for math; the verdict shape FastChat parses."""
    score = 4 if "REF" in user else (6 if "Q2:" in user else 8)
    return 200, f"The answer is fine. Rating: [[{score}]]"


def test_answers_in_fastchat_format_resume_after_crash(tmp_path, eval_inputs, generator, tiny_model_dir):
    j = job(tmp_path, eval_inputs)
    j.model_dir = tiny_model_dir
    crashing = Counting(generator, crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        mt_bench.generate_answers(j, generator=crashing)
    cached = [json.loads(line) for line in (tmp_path / mt_bench.ANSWER_CACHE).read_text().splitlines()]
    assert 0 < len(cached) == len(crashing.made) < 2 * len(QUESTIONS)  # the batches done before the crash
    again = Counting(generator)
    rows = mt_bench.generate_answers(j, generator=again)
    assert len(again.made) == 2 * len(QUESTIONS) - len(cached)  # only what was missing
    assert not {(r["question_id"], r["turn"]) for r in cached} & set(again.made)
    saved = [json.loads(line) for line in (tmp_path / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert saved == rows and [r["question_id"] for r in rows] == [x["question_id"] for x in QUESTIONS]
    for row in rows:
        assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert row["model_id"] == "tiny" and len(row["choices"][0]["turns"]) == 2
    third = Counting(generator)
    mt_bench.generate_answers(j, generator=third)
    assert third.made == []  # everything cached: nothing regenerated
    j.max_new_tokens = 7  # other settings: the cache is not silently reused
    with pytest.raises(UserError, match="max_new_tokens"):
        mt_bench.generate_answers(j, generator=third)


def test_turn_two_sees_the_model_turn_one_answer_and_category_temperatures(tmp_path, eval_inputs):
    seen = []

    class Recording:
        backend = "transformers"

        def generate(self, requests, on_batch) -> None:
            seen.extend(requests)
            on_batch([(r.key, f"answer {r.key[0]}/{r.key[1]}") for r in requests])

    mt_bench.generate_answers(job(tmp_path, eval_inputs), generator=Recording())
    second = {r.key[0]: r for r in seen if r.key[1] == 2}
    assert second[81].messages == [{"role": "user", "content": QUESTIONS[0]["turns"][0]},
                                   {"role": "assistant", "content": "answer 81/1"},
                                   {"role": "user", "content": QUESTIONS[0]["turns"][1]}]
    temperatures = {r.key[0]: r.temperature for r in seen}
    assert temperatures == {81: 0.7, 111: 0.0, 131: 0.0, 141: 0.0}


def _answered(tmp_path, eval_inputs, url, retries=0):
    j = job(tmp_path, eval_inputs, url, retries)

    class Fixed:
        backend = "transformers"

        def generate(self, requests, on_batch) -> None:
            on_batch([(r.key, "an answer") for r in requests])

    return j, mt_bench.generate_answers(j, generator=Fixed())


def test_judging_aggregation_and_references(tmp_path, eval_inputs, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(rating_by_question) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url)
        mt_bench.judge_answers(j, answers)
        summary = mt_bench.summarize(j)
    assert len(server.requests) == 2 * len(QUESTIONS)
    assert all({k.lower(): v for k, v in h.items()}["authorization"] == f"Bearer {SECRET}" for h in server.headers)
    assert {r["model"] for r in server.requests} == {"judge-x"} and all(r["temperature"] == 0 for r in server.requests)
    assert "8 requests (0 of 8 verdicts cached)" in capsys.readouterr().out
    math_prompts = [r["messages"][1]["content"] for r in server.requests if "2 + 3" in r["messages"][1]["content"]]
    assert len(math_prompts) == 2 and all("REF" in p and "5" in p for p in math_prompts)
    # math 4 on both turns; others 8 (turn 1) and 6 (turn 2); reasoning has no reference: judged without
    assert summary["categories"] == {"extraction": 7.0, "math": 4.0, "reasoning": 7.0, "writing": 7.0}
    assert summary["turn_1"] == pytest.approx((8 * 3 + 4) / 4) and summary["turn_2"] == pytest.approx((6 * 3 + 4) / 4)
    assert summary["score"] == pytest.approx((8 * 3 + 6 * 3 + 8) / 8)
    assert summary["verdicts"] == 8 and summary["unparseable"] == 0 and summary["questions_without_reference"] == 1
    rows = [json.loads(line) for line in Path(summary["judgments_file"]).read_text().splitlines()]
    assert set(rows[0]) == {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
    assert {tuple(r["judge"]) for r in rows} >= {("judge-x", "single-v1"), ("judge-x", "single-math-v1-multi-turn")}
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_text(errors="ignore")


def test_unparseable_verdicts_are_counted_not_fatal(tmp_path, eval_inputs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(lambda n, user: (200, "I cannot decide." if "Q2:" in user else "Rating: [[9]]")) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url)
        mt_bench.judge_answers(j, answers)
    summary = mt_bench.summarize(j)
    assert summary["unparseable"] == 4 and summary["score"] == 9.0 and summary["turn_2"] is None
    assert "4 without a [[rating]]" in mt_bench.headline(summary)


def test_failing_judge_is_retried_then_reported_and_resumed_without_paying_twice(tmp_path, eval_inputs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    flaky = JudgeServer(lambda n, user: (200, "[[7]]") if n < 3 or n == 4 else (503, ""))
    with flaky as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url, retries=1)
        j.judge.parallel = 1
        with pytest.raises(UserError) as err:
            mt_bench.judge_answers(j, answers)
    message = str(err.value)
    assert "HTTP 503" in message and "resume with: zephyr-train eval" in message and SECRET not in message
    assert "after 2 attempts" in message
    saved = int(re.search(r"(\d+) of 8 verdicts saved", message).group(1))
    assert saved == 4  # three first, then request 4 succeeded on its retry
    with JudgeServer(lambda n, user: (200, "[[5]]")) as healthy:
        j.judge.base_url = healthy.url
        mt_bench.judge_answers(j, answers)
    assert len(healthy.requests) == 8 - saved
    assert mt_bench.summarize(j)["verdicts"] == 8


def test_auth_error_is_not_retried(tmp_path, eval_inputs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(lambda n, user: (401, "")) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url, retries=3)
        j.judge.parallel = 1
        with pytest.raises(UserError, match="HTTP 401"):
            mt_bench.judge_answers(j, answers)
    assert len(server.requests) <= 2  # retried, the first request alone would make 4


@pytest.mark.parametrize("text, rating", [("Rating: [[7]]", 7.0), ("[[8.5]] overall", 8.5), ("score [6]", 6.0),
                                          ("no score here", None), ("[[ten]]", None)])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("row, fragment", [
    ({"question_id": 1, "category": "writing", "turns": ["only one"]}, "line 2: field turns"),
    ({"question_id": 1, "turns": ["a", "b"]}, "line 2: field category"),
    ({"category": "writing", "turns": ["a", "b"]}, "line 2: field question_id"),
])
def test_question_file_in_the_wrong_shape_names_line_and_field(tmp_path, row, fragment):
    path = write_jsonl(tmp_path / "q.jsonl", [QUESTIONS[0], row])
    with pytest.raises(UserError, match=re.escape(fragment)):
        q.load_questions(str(path))


def test_cli_errors_before_any_model_loads(tmp_path, eval_inputs, tiny_model_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question_id": 1, "category": "writing", "turns": "hello"}])
    env = {"OPENAI_API_KEY": ""}
    base = ["eval", str(tiny_model_dir), "--bench", "mt-bench", "--out", str(tmp_path / "o")]
    assert_user_error(cli(*base, "--questions", str(bad), "--no-judge"), "bad.jsonl line 1", "field turns")
    assert_user_error(cli(*base, "--questions", str(eval_inputs["questions"]), env=env), "OPENAI_API_KEY")
    missing = cli(*base, "--questions", str(eval_inputs["questions"]), "--judge-base-url", "http://127.0.0.1:9/v1",
                  env=env)
    assert_user_error(missing, "--judge-prompts")  # no FastChat with its prompts installed here
    assert not (tmp_path / "o" / "model_answer").exists()


@pytest.mark.slow
def test_cli_mt_bench_end_to_end(tmp_path, eval_inputs, tiny_model_dir):
    with JudgeServer(rating_by_question) as server:
        run = cli("eval", str(tiny_model_dir), "--bench", "mt-bench", "--out", str(tmp_path / "o"),
                  "--questions", str(eval_inputs["questions"]), "--judge-prompts", str(eval_inputs["prompts"]),
                  "--judge-base-url", server.url, "--judge-model", "judge-x", "--max-new-tokens", "8",
                  env={"OPENAI_API_KEY": SECRET})
        assert run.returncode == 0, run.stderr
        assert "judging with judge-x" in run.stdout and ": 8 requests (0 of 8 verdicts cached)" in run.stdout
        assert "MT-Bench 6.25" in run.stdout and "per category:" in run.stdout
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["score"] == 6.25 and summary["verdicts"] == 8 and SECRET not in run.stdout + run.stderr
    answers = tmp_path / "o" / "model_answer" / f"{tiny_model_dir.name}.jsonl"
    assert len(answers.read_text().splitlines()) == 4


def test_hub_row_shape_and_fastchat_prompts_when_fastchat_ships_them(tmp_path, monkeypatch):
    row = {"prompt_id": 12345678, "prompt": ["a", "b"], "category": "math", "reference": []}  # mt_bench_prompts
    question = q.question_from(row, "hub row 0")
    assert (question.question_id, question.turns, question.reference, question.temperature) == (12345678, ["a", "b"],
                                                                                               None, 0.0)
    with pytest.raises(UserError, match="--judge-prompts"):
        q.load_judge_prompts(None)  # no FastChat here
    data = tmp_path / "fastchat" / "llm_judge" / "data"
    data.mkdir(parents=True)
    (tmp_path / "fastchat" / "__init__.py").write_text("")
    write_jsonl(data / "judge_prompts.jsonl", PROMPTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(q.load_judge_prompts(None)) == set(q.PROMPT_NAMES.values())
