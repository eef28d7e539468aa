"""MT-Bench, the way FastChat's llm_judge runs it, in one call.

1. Answers: both turns of every question, rendered as FastChat renders them for the model (Zephyr: an
   empty system turn first), MT-Bench's per-category temperature (greedy below 1e-4), 1024 new tokens,
   turn 2 seeing the model's own turn-1 answer; saved in FastChat's `model_answer` format
   (DIR/model_answer/MODEL_ID.jsonl) so FastChat's `show_result.py` and other tools read them.
2. Verdicts: single-answer grading of every turn (160 judgments for the 80 questions) with FastChat's
   prompt per category and turn, math, reasoning and coding against their reference answer (never
   without one); each saved as it arrives in FastChat's `model_judgment` format
   (DIR/model_judgment/JUDGE_single.jsonl), score -1 when the verdict holds no `[[rating]]` or when the
   judge kept failing on it (`$ERROR$`, as FastChat records it).
3. Scores: mean over the verdicts that are not -1, overall, per turn and per category, as FastChat's
   show_result computes them, in DIR/summary.json, named by the judge and its endpoint.

Resumable: answers are cached per question and turn (DIR/cache/answers.jsonl) and verdicts per
question, turn and judge, so a re-run after a crash or a rate limit neither regenerates nor pays again;
-1 verdicts are asked again only with `retry_failed` (--retry-failed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from zephyr_train.config.evaluation import MT_BENCH_MAX_NEW_TOKENS
from zephyr_train.errors import UserError
from zephyr_train.eval import questions as q
from zephyr_train.eval import store
from zephyr_train.eval.generation import Generator, Request, fastchat_system_turn, pick_backend
from zephyr_train.eval.judge import (
    ERROR_OUTPUT,
    Judge,
    JudgeFailed,
    JudgeSettings,
    RequestFailed,
    endpoint,
    parse_rating,
)
from zephyr_train.run_files import SUMMARY

ANSWER_CACHE = "cache/answers.jsonl"


@dataclass
class MtBenchJob:
    model_dir: Path
    out: Path
    questions: list[q.Question]
    model_id: str
    max_new_tokens: int = MT_BENCH_MAX_NEW_TOKENS
    judge: JudgeSettings | None = None  # None: answers only
    prompts: dict[str, q.JudgePrompt] = field(default_factory=dict)
    references: dict[Any, list[str]] = field(default_factory=dict)
    backend: str = "auto"
    batch_size: int = 8
    seed: int = 42
    extra_settings: dict = field(default_factory=dict)  # e.g. the training stage's fingerprint
    resume_command: str = "the same command"
    question_set_size: int | None = None  # the whole set's size when `questions` is its first N (--limit)
    retry_failed: bool = False  # ask again for verdicts saved at -1 ($ERROR$ or no [[rating]])
    system_turn: bool | None = None  # open with an empty system turn; None: as FastChat does for this model


def _key(question_id: Any, turn: int) -> str:
    return f"{question_id}/{turn}"


def system_turn(job: MtBenchJob) -> bool:
    return job.system_turn if job.system_turn is not None else fastchat_system_turn(job.model_dir)


def answer_settings(job: MtBenchJob, backend: str) -> dict:
    """What decides the answers: a cache made under other settings is not reused."""
    asked = [[x.question_id, x.category, x.turns] for x in job.questions]
    return {"model_dir": str(Path(job.model_dir).resolve()), "model_id": job.model_id, "backend": backend,
            "max_new_tokens": job.max_new_tokens, "seed": job.seed, "questions": asked,
            "empty_system_turn": system_turn(job), **job.extra_settings}


def conversation(question: q.Question, turn: int, first_answer: str | None, system: bool) -> list[dict]:
    """The messages FastChat's gen_model_answer renders for one turn: its empty system turn where the model's
    FastChat template has one, turn 2 after the model's own turn-1 answer."""
    messages = [{"role": "system", "content": ""}] if system else []
    messages.append({"role": "user", "content": question.turns[0]})
    if turn == 2:
        messages += [{"role": "assistant", "content": first_answer},
                     {"role": "user", "content": question.turns[1]}]
    return messages


def generate_answers(job: MtBenchJob, overwrite: bool = False, generator: Any = None) -> list[dict]:
    """Both turns of every question, cached per question and turn; FastChat model_answer rows."""

    backend = generator.backend if generator is not None else pick_backend(job.backend)
    settings = answer_settings(job, backend)
    store.claim(job.out, settings, overwrite, "pass --overwrite to answer again, or another --out")
    cache_file = job.out / ANSWER_CACHE
    cached = {_key(r["question_id"], r["turn"]): r["answer"] for r in store.read_cache(cache_file)}
    missing = sum(1 for x in job.questions for t in (1, 2) if _key(x.question_id, t) not in cached)
    if missing:

        print(f"mt-bench: generating {missing} answers for {job.model_id} ({len(cached)} cached) with {backend}")
        generator = generator or Generator(job.model_dir, backend, job.batch_size, job.seed)

        def save(batch: list[tuple[Any, str]]) -> None:
            rows = [{"question_id": qid, "turn": turn, "answer": text} for (qid, turn), text in batch]
            store.append_jsonl(cache_file, rows)
            cached.update({_key(qid, turn): text for (qid, turn), text in batch})

        for turn in (1, 2):
            requests = [Request((x.question_id, turn), conversation(x, turn, cached.get(_key(x.question_id, 1)),
                                                                    settings["empty_system_turn"]),
                                x.temperature, job.max_new_tokens)
                        for x in job.questions if _key(x.question_id, turn) not in cached]
            generator.generate(requests, save)
    rows = [{"question_id": x.question_id, "answer_id": _answer_id(job.model_id, x.question_id),
             "model_id": job.model_id,
             "choices": [{"index": 0, "turns": [cached[_key(x.question_id, t)] for t in (1, 2)]}],
             "tstamp": time.time()} for x in job.questions]
    store.write_jsonl(job.out / "model_answer" / f"{job.model_id}.jsonl", rows)
    return rows


def _answer_id(model_id: str, question_id: Any) -> str:
    """Stable per model and question, so a rewritten answer file keeps its ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"zephyr-train/{model_id}/{question_id}").hex[:22]


def judge_request(question: q.Question, answers: list[str], turn: int, prompts: dict[str, q.JudgePrompt],
                  references: dict[Any, list[str]]) -> tuple[str, str, str]:
    """(prompt name, system prompt, user prompt) for one turn, filled exactly as FastChat's `run_judge_single`
    fills its templates: the same prompt per category and turn, the same placeholders, the reference's
    turn 1 for turn 1 and both of its turns for turn 2."""
    need_ref = question.category in q.NEED_REF
    prompt = prompts[q.PROMPT_NAMES[(need_ref, turn)]]
    if turn == 1:
        fill = {"question": question.turns[0], "answer": answers[0]}
    else:
        fill = {"question_1": question.turns[0], "question_2": question.turns[1], "answer_1": answers[0],
                "answer_2": answers[1]}
    if need_ref:
        ref = references.get(question.question_id)
        if not ref or len(ref) < turn:
            raise UserError(f"question {question.question_id!r} ({question.category}): no reference answer for "
                            f"turn {turn}; pass --reference-answers FILE that covers it")
        fill.update({f"ref_answer_{i}": ref[i - 1] for i in range(1, turn + 1)})
    try:
        user = prompt.prompt_template.format(**fill)
    except (KeyError, IndexError) as err:
        raise UserError(f"judge prompt {prompt.name}: its template asks for {err}, which MT-Bench does not "
                        "provide for this turn; use FastChat's judge_prompts.jsonl") from None
    return prompt.name, prompt.system_prompt, user


def latest_verdicts(job: MtBenchJob) -> dict[tuple[Any, int], dict]:
    """(question_id, turn) -> the last verdict this judge gave on an asked question (a re-asked -1 verdict is
    superseded by the later row; FastChat's show_result drops the -1 one either way)."""
    asked = {x.question_id for x in job.questions}
    latest = {}
    for row in store.read_cache(judgments_file(job)):
        if row.get("question_id") in asked and (row.get("judge") or [None])[0] == job.judge.model:
            latest[(row["question_id"], row["turn"])] = row
    return latest


def pending(job: MtBenchJob, answers: list[dict]) -> list[tuple[q.Question, int, str, str, str]]:
    """(question, turn, prompt name, system, user) of every verdict still to get: none yet, or -1 when
    `retry_failed`. Every prompt is filled first, so a prompt that cannot be is an error before any request."""
    by_id = {r["question_id"]: r["choices"][0]["turns"] for r in answers}
    latest = latest_verdicts(job)
    asks = [(x, turn, *judge_request(x, by_id[x.question_id], turn, job.prompts, job.references))
            for x in job.questions for turn in (1, 2)]
    return [ask for ask in asks if (row := latest.get((ask[0].question_id, ask[1]))) is None
            or (job.retry_failed and row["score"] == -1)]


def judge_answers(job: MtBenchJob, answers: list[dict], judge_factory: Callable[[JudgeSettings], Any] = Judge) -> dict:
    """Grade every turn not graded yet by this judge; returns the counts of this call."""
    assert job.judge is not None
    todo = pending(job, answers)
    where, total = endpoint(job.judge), 2 * len(job.questions)
    print(f"mt-bench: judging with {job.judge.model} at {where}: {len(todo)} requests "
          f"({total - len(todo)} of {total} verdicts cached)")
    if not todo:
        return {"requests": 0, "errors": 0}
    judge = judge_factory(job.judge)
    try:
        made, errors, failure = _ask_all(job, judge, todo)
    finally:
        if hasattr(judge, "close"):
            judge.close()
    if failure is not None:
        saved = len(latest_verdicts(job))
        raise UserError(f"judge {job.judge.model} at {where} failed: {failure}; {saved} of {total} verdicts saved "
                        f"in {judgments_file(job)}; resume with: {job.resume_command}")
    return {"requests": made, "errors": errors}


def _ask_all(job: MtBenchJob, judge: Any, todo: list) -> tuple[int, int, JudgeFailed | None]:
    """Send every request `job.judge.parallel` at a time, saving each verdict as it arrives; a request that
    kept failing is saved as $ERROR$ (score -1). Stops asking at the first `JudgeFailed` (what is in flight
    is paid for, so it is saved) and returns it; (verdicts saved, of which $ERROR$, failure)."""
    made, errors, failure, unexpected = 0, 0, None, None
    with ThreadPoolExecutor(max_workers=job.judge.parallel) as pool:
        futures = {pool.submit(judge.complete, system, user): (x, turn, name, user)
                   for x, turn, name, system, user in todo}
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for future in (f for f in finished if not f.cancelled()):
                err = future.exception()
                if isinstance(err, JudgeFailed):
                    failure = failure or err
                elif err is not None and not isinstance(err, RequestFailed):
                    unexpected = unexpected or err
                else:
                    _save(job, *futures[future], future.result() if err is None else ERROR_OUTPUT, err)
                    made, errors = made + 1, errors + (err is not None)
            if failure is not None or unexpected is not None:
                remaining = {f for f in remaining if not f.cancel()}
    if unexpected is not None:
        raise unexpected
    return made, errors, failure


def _save(job: MtBenchJob, x: q.Question, turn: int, name: str, user: str, text: str,
          error: Exception | None) -> None:
    """One verdict in FastChat's model_judgment row shape (plus `error` on a failed one)."""
    row = {"question_id": x.question_id, "model": job.model_id, "judge": [job.judge.model, name],
           "user_prompt": user, "judgment": text, "score": _score(text), "turn": turn, "tstamp": time.time()}
    if error is not None:
        row["error"] = str(error)
        print(f"mt-bench: question {x.question_id} turn {turn}: the judge kept failing ({error}); saved as "
              f"{ERROR_OUTPUT}, score -1, as FastChat does")
    store.append_jsonl(judgments_file(job), [row])


def _score(text: str) -> float:
    rating = parse_rating(text)
    return -1 if rating is None else rating


def judgments_file(job: MtBenchJob) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job.judge.model)
    return job.out / "model_judgment" / f"{safe}_single.jsonl"


def summarize(job: MtBenchJob) -> dict:
    """Scores from the saved verdicts as FastChat's show_result computes them (-1 left out), overall, per
    turn, per category; with the judge, its endpoint and whether the question set was cut (--limit)."""
    size = job.question_set_size or len(job.questions)
    summary: dict[str, Any] = {
        "bench": "mt-bench", "model_id": job.model_id, "model_dir": str(job.model_dir),
        "questions": len(job.questions), "question_set_size": size, "partial": len(job.questions) < size,
        "answers_file": str(job.out / "model_answer" / f"{job.model_id}.jsonl")}
    if job.judge is None:
        return {**summary, "judged": False}
    asked = {x.question_id: x for x in job.questions}
    latest = latest_verdicts(job)
    scored = [r for r in latest.values() if r["score"] != -1]
    errors = sum(1 for r in latest.values() if r["score"] == -1 and r["judgment"] == ERROR_OUTPUT)

    def avg(rows: list[dict]) -> float | None:
        return round(float(mean(r["score"] for r in rows)), 4) if rows else None

    categories = sorted({x.category for x in job.questions})
    return {**summary, "judged": True, "judge": job.judge.model, "judge_endpoint": endpoint(job.judge),
            "score": avg(scored), "turn_1": avg([r for r in scored if r["turn"] == 1]),
            "turn_2": avg([r for r in scored if r["turn"] == 2]),
            "categories": {c: avg([r for r in scored if asked[r["question_id"]].category == c]) for c in categories},
            "verdicts": len(latest), "expected_verdicts": 2 * len(job.questions),
            "failed": len(latest) - len(scored), "judge_errors": errors,
            "unparseable": len(latest) - len(scored) - errors, "judgments_file": str(judgments_file(job))}


def run(job: MtBenchJob, overwrite: bool = False, judge_factory: Callable[[JudgeSettings], Any] = Judge,
        generator: Any = None) -> dict:
    """Answers, verdicts, summary; DIR/summary.json is written and returned."""
    answers = generate_answers(job, overwrite, generator)
    if job.judge is not None:
        judge_answers(job, answers, judge_factory)
    summary = summarize(job)
    store.write_json(job.out / SUMMARY, summary)
    return summary


def title(summary: dict) -> str:
    """What the score is: "MT-Bench (judge: X at HOST)", and "partial: N of M questions" after --limit."""
    text = "MT-Bench"
    if summary.get("partial"):
        text += f", partial: {summary['questions']} of {summary['question_set_size']} questions"
    if summary.get("judged"):
        text += f" (judge: {summary.get('judge')} at {summary.get('judge_endpoint', '?')})"
    return text


def headline(summary: dict) -> str:
    if not summary.get("judged"):
        return f"{summary['questions']} questions answered (not judged): {summary['answers_file']}"
    cats = ", ".join(f"{c} {_fmt(v)}" for c, v in (summary.get("categories") or {}).items())
    text = (f"{title(summary)} {_fmt(summary['score'])} (turn 1 {_fmt(summary['turn_1'])}, turn 2 "
            f"{_fmt(summary['turn_2'])}; {summary['verdicts']}/{summary['expected_verdicts']} verdicts")
    if summary.get("failed"):
        text += (f", {summary['failed']} at -1 left out ({summary.get('judge_errors', 0)} {ERROR_OUTPUT} from the "
                 f"judge, {summary.get('unparseable', 0)} without a [[rating]]; --retry-failed asks again)")
    return text + f")\n    per category: {cats}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def load_summary(out: Path) -> dict | None:
    path = out / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
