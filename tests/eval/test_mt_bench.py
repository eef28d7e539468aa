"""MT-Bench end to end on the tiny model against FastChat's formats and settings: answers in its model_answer
format rendered as its `zephyr` template renders them, judge requests byte-identical to what its
gen_judgment.py sends (through a loopback OpenAI-compatible server, a test double at the one boundary that
cannot exist here: the remote judge API; see judge_server.py), means as its show_result.py computes them,
$ERROR$ verdicts, resume after interruptions. The fixtures are ours, in FastChat's file shapes (conftest.py)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, cli
from tests.eval.conftest import NEED_REF_IDS, PROMPTS, QUESTIONS, REFERENCES, write_jsonl
from tests.eval.judge_server import JudgeServer, refusing
from zephyr_train.errors import UserError
from zephyr_train.eval import command, mt_bench
from zephyr_train.eval import questions as q
from zephyr_train.eval.generation import Request, sampling
from zephyr_train.eval.judge import JudgeSettings, parse_rating

SECRET = "sk-test-0123456789abcdefSECRET"
# FastChat llm_judge/common.py: temperature_config and NEED_REF_CATS, as its files say them.
FASTCHAT_TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                         "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
FASTCHAT_NEED_REF = ["math", "reasoning", "coding", "arena-hard-200"]


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


class Recording:
    """Stands in for the model (answers 'answer QID/TURN') and keeps every request it was given."""

    backend = "transformers"

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def generate(self, requests, on_batch) -> None:
        self.seen.extend(requests)
        on_batch([(r.key, f"answer {r.key[0]}/{r.key[1]}") for r in requests])


def tiny_dir() -> Path:
    from zephyr_train.data import builtin

    return builtin.model_dir("builtin:tiny-mistral")


def job(out: Path, inputs: dict, judge_url: str | None = None, retries: int = 0) -> mt_bench.MtBenchJob:
    given = q.load_mt_bench(str(inputs["questions"]), None, str(inputs["prompts"]), str(inputs["references"]), True)
    settings = JudgeSettings("judge-x", judge_url, parallel=2, retries=retries, backoff_s=0.01) if judge_url else None
    return mt_bench.MtBenchJob(tiny_dir(), out, given.questions, "tiny", max_new_tokens=6, judge=settings,
                               prompts=given.prompts, references=given.references,
                               resume_command="zephyr-train eval ...")


def rating_by_question(number: int, user: str) -> tuple[int, str]:
    """4 for prompts holding GPT-4's reference; else 8 for turn 1 and 6 for turn 2; the verdict shape FastChat
    parses."""
    score = 4 if "GPT4-REF" in user else (6 if "### Bot:" in user else 8)
    return 200, f"The answer is fine. Rating: [[{score}]]"


def _answered(tmp_path, eval_inputs, url, retries=0):
    j = job(tmp_path, eval_inputs, url, retries)
    return j, mt_bench.generate_answers(j, generator=Recording())


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


def show_result(path: Path, model: str) -> tuple[float, float, float]:
    """(average, turn 1, turn 2) by FastChat's show_result.py `display_result_single`, restated: every row
    read, -1 dropped, pandas means per model and turn."""
    import pandas as pd

    df = pd.read_json(path, lines=True)[["model", "score", "turn"]]
    df = df[df["score"] != -1]
    df = df[df["model"].isin([model])]
    first = df[df["turn"] == 1].groupby(["model", "turn"]).mean()
    second = df[df["turn"] == 2].groupby(["model", "turn"]).mean()
    average = df[["model", "score"]].groupby(["model"]).mean()
    return average.loc[model, "score"], first.loc[(model, 1), "score"], second.loc[(model, 2), "score"]


def fastchat_body(question: dict, answers: list[str], multi_turn: bool) -> dict:
    """The chat-completions body FastChat's gen_judgment.py (single mode) sends for one match, restated from
    make_judge_single, run_judge_single and chat_completion_openai: its prompt per category and turn, its
    placeholders, GPT-4's reference (turn 1; turns 1 and 2 for turn 2), the system prompt when non-empty,
    n 1, temperature 0, max_tokens 2048."""
    math = question["category"] in FASTCHAT_NEED_REF
    name = ("single-math-v1" if math else "single-v1") + ("-multi-turn" if multi_turn else "")
    prompt = next(p for p in PROMPTS if p["name"] == name)
    kwargs = {}
    if math:
        ref = next(r for r in REFERENCES if r["question_id"] == question["question_id"])
        kwargs["ref_answer_1"] = ref["choices"][0]["turns"][0]
        if multi_turn:
            kwargs["ref_answer_2"] = ref["choices"][0]["turns"][1]
    if multi_turn:
        user = prompt["prompt_template"].format(question_1=question["turns"][0], question_2=question["turns"][1],
                                                answer_1=answers[0], answer_2=answers[1], **kwargs)
    else:
        user = prompt["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kwargs)
    system = [{"role": "system", "content": prompt["system_prompt"]}] if prompt["system_prompt"] else []
    return {"model": "judge-x", "messages": [*system, {"role": "user", "content": user}], "n": 1,
            "temperature": 0, "max_tokens": 2048}


def test_answers_in_fastchat_format_resume_after_crash(tmp_path, eval_inputs, generator):
    j = job(tmp_path, eval_inputs)
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


def test_answer_prompts_as_fastchat_renders_them_for_zephyr(tmp_path, eval_inputs, tiny_model_dir, generator):
    """The CLI's defaults: 1024 new tokens, FastChat's temperature per category, the empty Zephyr system turn,
    turn 2 after the model's own turn-1 answer; rendered, FastChat's `zephyr` conversation text."""
    args = parsed(str(tiny_model_dir), "--bench", "mt-bench", "--out", str(tmp_path), "--no-judge",
                  "--questions", str(eval_inputs["questions"]))
    recording = Recording()
    mt_bench.generate_answers(command.mt_bench_job(args, tiny_model_dir, tmp_path, "tiny"), generator=recording)
    assert {r.max_new_tokens for r in recording.seen} == {1024}
    assert not command.mt_bench_job(args, tiny_model_dir, tmp_path, "tiny").retry_failed
    args.retry_failed = True  # --retry-failed
    assert command.mt_bench_job(args, tiny_model_dir, tmp_path, "tiny").retry_failed
    category = {x["question_id"]: x["category"] for x in QUESTIONS}
    assert {r.key[0]: r.temperature for r in recording.seen} == {i: FASTCHAT_TEMPERATURES[c]
                                                                 for i, c in category.items()}
    second = {r.key[0]: r for r in recording.seen if r.key[1] == 2}[81].messages
    assert second == [{"role": "system", "content": ""}, {"role": "user", "content": QUESTIONS[0]["turns"][0]},
                      {"role": "assistant", "content": "answer 81/1"},
                      {"role": "user", "content": QUESTIONS[0]["turns"][1]}]
    # FastChat's zephyr template (conversation.py: CHATML style, system_template "<|system|>\n{system_message}",
    # sep "</s>") for the same two turns
    assert generator.render(second) == (f"<|system|>\n</s>\n<|user|>\n{QUESTIONS[0]['turns'][0]}</s>\n<|assistant|>\n"
                                        f"answer 81/1</s>\n<|user|>\n{QUESTIONS[0]['turns'][1]}</s>\n<|assistant|>\n")


def test_temperature_of_every_category():
    for category, temperature in FASTCHAT_TEMPERATURES.items():
        assert q.Question(1, category, ["a", "b"]).temperature == temperature, category
    assert q.Question(1, "poetry", ["a", "b"]).temperature == 0.7  # FastChat's default for other categories
    assert list(q.NEED_REF) == FASTCHAT_NEED_REF


def test_greedy_below_1e4_sampled_above(generator):
    assert sampling(0.0) == sampling(0.99e-4) == {"do_sample": False}
    assert sampling(1e-4) == {"do_sample": True, "temperature": 1e-4}
    assert sampling(0.7) == {"do_sample": True, "temperature": 0.7}

    def answers(temperature: float, seed: int) -> list:
        generator.seed, got = seed, []
        generator.generate([Request(0, [{"role": "user", "content": "Say something."}], temperature, 12)], got.extend)
        return got

    try:
        assert answers(0.0, 1) == answers(0.0, 2)  # greedy: the seed cannot matter
        assert answers(1.0, 1) != answers(1.0, 2)  # sampled: it does (so the line above can fail)
    finally:
        generator.seed = 42


def test_judge_requests_are_byte_identical_to_fastchat(tmp_path, eval_inputs, monkeypatch):
    """Every request, for each category and turn: FastChat's prompt, placeholders and references, max_tokens
    2048, temperature 0; the verdict rows name the same judge prompts."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(rating_by_question) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url)
        mt_bench.judge_answers(j, answers)
    assert all({k.lower(): v for k, v in h.items()}["authorization"] == f"Bearer {SECRET}" for h in server.headers)
    sent = sorted(json.dumps(body, sort_keys=True) for body in server.requests)
    turns = {r["question_id"]: r["choices"][0]["turns"] for r in answers}
    expected = sorted(json.dumps(fastchat_body(x, turns[x["question_id"]], multi), sort_keys=True)
                      for x in QUESTIONS for multi in (False, True))
    assert sent == expected
    rows = [json.loads(line) for line in mt_bench.judgments_file(j).read_text().splitlines()]
    names = {(r["question_id"], r["turn"]): r["judge"][1] for r in rows}
    assert names[(111, 1)] == "single-math-v1" and names[(121, 2)] == "single-math-v1-multi-turn"
    assert names[(141, 1)] == "single-v1" and names[(81, 2)] == "single-v1-multi-turn"
    assert set(rows[0]) == {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_text(errors="ignore")


def test_refused_prompts_are_recorded_at_minus_one_and_the_run_completes(tmp_path, eval_inputs, monkeypatch, capsys):
    """A judge that always refuses question 141's prompts (HTTP 400): both retried, saved as $ERROR$ with score
    -1, the run completes, the mean is over the rest and FastChat's show_result gives the same numbers; a
    resume asks again only with retry_failed."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(refusing("Why is the sky blue?", rating_by_question)) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url, retries=1)
        summary = mt_bench.run(j, generator=Recording())
    assert len(server.requests) == 14 + 2 * 2  # each refused prompt: the request and one retry
    out = capsys.readouterr().out
    assert "question 141 turn 1: the judge kept failing (HTTP 400" in out and "$ERROR$" in out
    rows = [json.loads(line) for line in mt_bench.judgments_file(j).read_text().splitlines()]
    failed = [r for r in rows if r["score"] == -1]
    assert {(r["question_id"], r["judgment"]) for r in failed} == {(141, "$ERROR$")} and len(failed) == 2
    # 4 plain questions at 8 then 6, 3 judged against GPT-4's reference at 4
    assert summary["score"] == pytest.approx((4 * 8 + 4 * 6 + 6 * 4) / 14, abs=1e-4)
    assert (summary["failed"], summary["judge_errors"], summary["unparseable"], summary["verdicts"]) == (2, 2, 0, 16)
    assert show_result(mt_bench.judgments_file(j), "tiny") == pytest.approx(
        (summary["score"], summary["turn_1"], summary["turn_2"]), abs=1e-4)
    line = mt_bench.headline(summary)
    assert "(judge: judge-x at 127.0.0.1:" in line and "2 at -1 left out (2 $ERROR$" in line
    assert "stem -" in line  # no verdict left for the category
    with JudgeServer(rating_by_question) as healthy:
        j.judge.base_url = healthy.url
        assert mt_bench.judge_answers(j, answers) == {"requests": 0, "errors": 0}  # -1 kept unless asked
        j.retry_failed = True
        assert mt_bench.judge_answers(j, answers) == {"requests": 2, "errors": 0}
    assert [b["messages"][-1]["content"].count("Why is the sky blue?") > 0 for b in healthy.requests] == [True] * 2
    again = mt_bench.summarize(j)
    assert again["failed"] == 0 and again["score"] == pytest.approx((5 * 8 + 5 * 6 + 6 * 4) / 16, abs=1e-4)
    assert show_result(mt_bench.judgments_file(j), "tiny") == pytest.approx(
        (again["score"], again["turn_1"], again["turn_2"]), abs=1e-4)


def test_unparseable_verdicts_are_counted_not_fatal(tmp_path, eval_inputs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(lambda n, user: (200, "I cannot decide." if "### Bot:" in user else "Rating: [9]")) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url)
        mt_bench.judge_answers(j, answers)
    summary = mt_bench.summarize(j)
    assert summary["unparseable"] == 8 and summary["judge_errors"] == 0 and summary["score"] == 9.0
    assert summary["turn_2"] is None and "8 without a [[rating]]" in mt_bench.headline(summary)


def test_endpoint_errors_stop_at_once_and_resume_without_paying_twice(tmp_path, eval_inputs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with JudgeServer(lambda n, user: (200, "[[7]]") if n < 3 else (401, "")) as server:
        j, answers = _answered(tmp_path, eval_inputs, server.url, retries=3)
        j.judge.parallel = 1
        with pytest.raises(UserError) as err:
            mt_bench.judge_answers(j, answers)
    message = str(err.value)
    assert "HTTP 401" in message and "resume with: zephyr-train eval" in message and SECRET not in message
    prompts = [json.dumps(body["messages"]) for body in server.requests]
    assert len(set(prompts)) == len(prompts) < 16  # a wrong key is not retried (a retry resends the same prompt)
    assert re.search(r"\b3 of 16 verdicts saved", message)
    j.judge.base_url = "http://127.0.0.1:9/v1"  # nothing listens there: unreachable after its retries
    with pytest.raises(UserError, match="after 4 attempts.*3 of 16 verdicts saved"):
        mt_bench.judge_answers(j, answers)
    with JudgeServer(lambda n, user: (200, "[[5]]")) as healthy:
        j.judge.base_url = healthy.url
        mt_bench.judge_answers(j, answers)
    assert len(healthy.requests) == 16 - 3
    assert mt_bench.summarize(j)["verdicts"] == 16


def test_default_inputs_are_fastchat_files_and_references_are_never_left_out(tmp_path, eval_inputs, fastchat_cache):
    given = q.load_mt_bench("fastchat", None, "fastchat", "fastchat", True)
    assert [x.question_id for x in given.questions] == [x["question_id"] for x in QUESTIONS]
    assert set(given.references) == NEED_REF_IDS and given.references[111][1].startswith("GPT4-REF 111 turn two")
    assert set(given.prompts) == set(q.PROMPT_NAMES.values())
    own = q.load_mt_bench("fastchat", 4, "fastchat", "questions", True)
    assert own.references == {101: ["yes", "no"], 111: ["5", "20"]} and own.set_size == 8
    extra = write_jsonl(tmp_path / "mine.jsonl", [*QUESTIONS, {"question_id": 999, "category": "math",
                                                               "turns": ["1+1?", "2+2?"], "reference": ["2", "4"]}])
    with pytest.raises(UserError, match=r"question 999 \(math\) has no reference answer .* --reference-answers"):
        q.load_references("fastchat", q.load_questions(str(extra)))
    unreferenced = write_jsonl(tmp_path / "bare.jsonl", [{"question_id": 5, "category": "coding", "turns": ["a", "b"]}])
    with pytest.raises(UserError, match="question 5 .* its `reference` field"):
        q.load_references("questions", q.load_questions(str(unreferenced)))


def test_offline_without_the_fastchat_files_is_one_line(tmp_path, tiny_model_dir):
    base = ["eval", str(tiny_model_dir), "--bench", "mt-bench", "--out", str(tmp_path / "o")]
    env = {"ZEPHYR_TRAIN_CACHE": str(tmp_path / "empty"), "OPENAI_API_KEY": SECRET}
    assert_user_error(cli(*base, "--no-judge", env=env), "FastChat's question.jsonl is not cached", "offline",
                      "--questions FILE")
    assert_user_error(cli(*base, "--questions", str(tmp_path / "none.jsonl"), env=env), "none.jsonl")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, rating", [("Rating: [[7]]", 7), ("[[8.5]] overall", 8.5), ("score [6]", 6),
                                          ("no score here", None), ("[[ten]]", None)])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating
    assert type(parse_rating(text)) is type(rating)  # "[[7]]" is the int 7, as FastChat saves it


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
                  "--reference-answers", str(eval_inputs["references"]), "--judge-base-url", server.url,
                  "--judge-model", "judge-x", "--max-new-tokens", "8", "--limit", "4", env={"OPENAI_API_KEY": SECRET})
        assert run.returncode == 0, run.stderr
        assert "judging with judge-x" in run.stdout and ": 8 requests (0 of 8 verdicts cached)" in run.stdout
        assert "MT-Bench, partial: 4 of 8 questions (judge: judge-x at 127.0.0.1:" in run.stdout
        assert " 5.50 (turn 1 6.00, turn 2 5.00" in run.stdout and "per category:" in run.stdout
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["score"] == 5.5 and summary["verdicts"] == 8 and SECRET not in run.stdout + run.stderr
    assert summary["partial"] and summary["judge"] == "judge-x" and summary["judge_endpoint"].startswith("127.0.0.1:")
    answers = tmp_path / "o" / "model_answer" / f"{tiny_model_dir.name}.jsonl"
    assert len(answers.read_text().splitlines()) == 4
