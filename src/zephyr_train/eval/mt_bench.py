"""MT-Bench, the way FastChat's llm_judge runs it, in one call.

1. Answers: both turns of every question, with the model's own chat template and MT-Bench's per-category
   temperature, turn 2 seeing the model's own turn-1 answer; saved in FastChat's `model_answer` format
   (DIR/model_answer/MODEL_ID.jsonl) so FastChat's `show_result.py` and other tools read them.
2. Verdicts: single-answer grading of every turn (160 judgments for the 80 questions), against the
   reference answer for math, reasoning and coding; each saved as it arrives in FastChat's
   `model_judgment` format (DIR/model_judgment/JUDGE_single.jsonl), score -1 when the verdict holds no
   `[[rating]]`.
3. Scores: mean over the parsed verdicts, overall, per turn and per category, in DIR/summary.json.

Resumable: answers are cached per question and turn (DIR/cache/answers.jsonl) and verdicts per
question, turn and judge, so a re-run after a crash or a rate limit neither regenerates nor pays again.
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

from zephyr_train.errors import UserError
from zephyr_train.eval import questions as q
from zephyr_train.eval import store
from zephyr_train.eval.generation import Generator, Request, pick_backend
from zephyr_train.eval.judge import Judge, JudgeFailed, JudgeSettings, parse_rating
from zephyr_train.run_files import SUMMARY

ANSWER_CACHE = "cache/answers.jsonl"


@dataclass
class MtBenchJob:
    model_dir: Path
    out: Path
    questions: list[q.Question]
    model_id: str
    max_new_tokens: int = 1024
    judge: JudgeSettings | None = None  # None: answers only
    prompts: dict[str, q.JudgePrompt] = field(default_factory=dict)
    references: dict[Any, list[str]] = field(default_factory=dict)
    backend: str = "auto"
    batch_size: int = 8
    seed: int = 42
    extra_settings: dict = field(default_factory=dict)  # e.g. the training stage's fingerprint
    resume_command: str = "the same command"


def _key(question_id: Any, turn: int) -> str:
    return f"{question_id}/{turn}"


def answer_settings(job: MtBenchJob, backend: str) -> dict:
    """What decides the answers: a cache made under other settings is not reused."""
    asked = [[x.question_id, x.category, x.turns] for x in job.questions]
    return {"model_dir": str(Path(job.model_dir).resolve()), "model_id": job.model_id, "backend": backend,
            "max_new_tokens": job.max_new_tokens, "seed": job.seed, "questions": asked, **job.extra_settings}


def generate_answers(job: MtBenchJob, overwrite: bool = False, generator: Any = None) -> list[dict]:
    """Both turns of every question, cached per question and turn; FastChat model_answer rows."""

    backend = generator.backend if generator is not None else pick_backend(job.backend)
    store.claim(job.out, answer_settings(job, backend), overwrite,
                "pass --overwrite to answer again, or another --out")
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
            requests = []
            for x in job.questions:
                if _key(x.question_id, turn) in cached:
                    continue
                messages = [{"role": "user", "content": x.turns[0]}]
                if turn == 2:
                    messages += [{"role": "assistant", "content": cached[_key(x.question_id, 1)]},
                                 {"role": "user", "content": x.turns[1]}]
                requests.append(Request((x.question_id, turn), messages, x.temperature, job.max_new_tokens))
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
                  references: dict[Any, list[str]]) -> tuple[str, str, str, bool]:
    """(prompt name, system prompt, user prompt, judged without its reference) for one turn, as FastChat
    fills its templates."""
    ref = references.get(question.question_id) if question.category in q.NEED_REF else None
    wants_ref = question.category in q.NEED_REF
    prompt = prompts[q.PROMPT_NAMES[(bool(ref), turn)]]
    fill = {"question": question.turns[0], "answer": answers[0], "question_1": question.turns[0],
            "question_2": question.turns[1], "answer_1": answers[0], "answer_2": answers[1]}
    if ref:
        fill.update(ref_answer_1=ref[0], ref_answer_2=ref[1] if len(ref) > 1 else ref[0])
    try:
        user = prompt.prompt_template.format(**fill)
    except (KeyError, IndexError) as err:
        raise UserError(f"judge prompt {prompt.name}: its template asks for {err}, which MT-Bench does not "
                        "provide; use FastChat's judge_prompts.jsonl") from None
    return prompt.name, prompt.system_prompt, user, wants_ref and not ref


def judge_answers(job: MtBenchJob, answers: list[dict], judge_factory: Callable[[JudgeSettings], Any] = Judge) -> dict:
    """Grade every turn not graded yet by this judge; returns the counts of this call."""
    assert job.judge is not None
    by_id = {r["question_id"]: r["choices"][0]["turns"] for r in answers}
    path = judgments_file(job)
    done = {(r["question_id"], r["turn"], tuple(r["judge"])) for r in store.read_cache(path)}
    todo = []
    for x in job.questions:
        for turn in (1, 2):
            name, system, user, no_ref = judge_request(x, by_id[x.question_id], turn, job.prompts, job.references)
            if (x.question_id, turn, (job.judge.model, name)) not in done:
                todo.append((x, turn, name, system, user))
    where = job.judge.base_url or "api.openai.com"
    total = 2 * len(job.questions)
    print(f"mt-bench: judging with {job.judge.model} at {where}: {len(todo)} requests "
          f"({total - len(todo)} of {total} verdicts cached)")
    if not todo:
        return {"requests": 0}
    judge = judge_factory(job.judge)
    made, failure = 0, None
    try:
        with ThreadPoolExecutor(max_workers=job.judge.parallel) as pool:
            futures = {pool.submit(judge.complete, system, user): (x, turn, name, user)
                       for x, turn, name, system, user in todo}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        failure = failure or future.exception()
                        continue
                    x, turn, name, user = futures[future]
                    text = future.result()
                    store.append_jsonl(path, [{
                        "question_id": x.question_id, "model": job.model_id, "judge": [job.judge.model, name],
                        "user_prompt": user, "judgment": text, "score": _score(text), "turn": turn,
                        "tstamp": time.time()}])
                    made += 1
                if failure is not None:  # stop asking; what is already in flight is paid for, so it is saved
                    pending = {f for f in pending if not f.cancel()}
    finally:
        if hasattr(judge, "close"):
            judge.close()
    if isinstance(failure, JudgeFailed):
        raise UserError(f"judge {job.judge.model} at {where} failed: {failure}; {len(done) + made} of {total} "
                        f"verdicts saved in {path}; resume with: {job.resume_command}")
    if failure is not None:
        raise failure
    return {"requests": made}


def _score(text: str) -> float:
    rating = parse_rating(text)
    return -1 if rating is None else rating


def judgments_file(job: MtBenchJob) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job.judge.model)
    return job.out / "model_judgment" / f"{safe}_single.jsonl"


def summarize(job: MtBenchJob) -> dict:
    """Scores from the saved verdicts: mean over parsed ones, overall, per turn, per category."""
    summary: dict[str, Any] = {
        "bench": "mt-bench", "model_id": job.model_id, "model_dir": str(job.model_dir),
        "questions": len(job.questions), "answers_file": str(job.out / "model_answer" / f"{job.model_id}.jsonl")}
    if job.judge is None:
        return {**summary, "judged": False}
    asked = {x.question_id: x for x in job.questions}
    latest: dict[tuple, dict] = {}
    for row in store.read_cache(judgments_file(job)):
        if row.get("question_id") in asked and row.get("judge", [None])[0] == job.judge.model:
            latest[(row["question_id"], row["turn"])] = row
    scored = [r for r in latest.values() if r["score"] != -1]
    no_ref = sum(1 for x in job.questions if x.category in q.NEED_REF and x.question_id not in job.references)

    def avg(rows: list[dict]) -> float | None:
        return round(mean(r["score"] for r in rows), 4) if rows else None

    categories = sorted({x.category for x in job.questions})
    return {**summary, "judged": True, "judge": job.judge.model,
            "score": avg(scored), "turn_1": avg([r for r in scored if r["turn"] == 1]),
            "turn_2": avg([r for r in scored if r["turn"] == 2]),
            "categories": {c: avg([r for r in scored if asked[r["question_id"]].category == c]) for c in categories},
            "verdicts": len(latest), "expected_verdicts": 2 * len(job.questions),
            "unparseable": len(latest) - len(scored), "questions_without_reference": no_ref,
            "judgments_file": str(judgments_file(job))}


def run(job: MtBenchJob, overwrite: bool = False, judge_factory: Callable[[JudgeSettings], Any] = Judge,
        generator: Any = None) -> dict:
    """Answers, verdicts, summary; DIR/summary.json is written and returned."""
    answers = generate_answers(job, overwrite, generator)
    if job.judge is not None:
        judge_answers(job, answers, judge_factory)
    summary = summarize(job)
    store.write_json(job.out / SUMMARY, summary)
    return summary


def headline(summary: dict) -> str:
    if not summary.get("judged"):
        return f"{summary['questions']} questions answered (not judged): {summary['answers_file']}"
    cats = ", ".join(f"{c} {_fmt(v)}" for c, v in (summary.get("categories") or {}).items())
    text = (f"MT-Bench {_fmt(summary['score'])} (turn 1 {_fmt(summary['turn_1'])}, turn 2 {_fmt(summary['turn_2'])}; "
            f"{summary['verdicts']}/{summary['expected_verdicts']} verdicts")
    if summary.get("unparseable"):
        text += f", {summary['unparseable']} without a [[rating]], left out"
    return text + f")\n    per category: {cats}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def load_summary(out: Path) -> dict | None:
    path = out / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
