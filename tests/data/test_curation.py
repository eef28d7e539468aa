"""`zephyr-train data`: every curation rule on small raw UltraChat / UltraFeedback fixtures, the saved
schema, determinism, bad input, the Hub push (HTTP mocked) and the round trip into SFT and DPO."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, cli
from zephyr_train.data.curation.engine import CorruptRow
from zephyr_train.data.curation.truecase import truecase
from zephyr_train.data.curation.ultrachat import DISCLAIMERS, compile_disclaimers
from zephyr_train.data.curation.ultrachat import process as chat_row
from zephyr_train.data.curation.ultrafeedback import process as feedback_row

FACT = "Paris is the capital of France. It lies on the Seine and has about two million inhabitants."


def filler_dialogues(n: int) -> list[dict]:
    return [{"id": f"f{i}", "data": [f"Tell me fact number {i} about rivers.", f"River fact {i}: {FACT}",
                                     "And one more?", f"Another fact {i}: rivers carry water to the sea."]}
            for i in range(n)]


CHAT_ROWS = [
    {"id": "casing", "data": ["hello. how are you? i wonder what to cook.", "Try a soup. it is easy, and i like it."]},
    {"id": "code", "data": ["How do i loop? see https://docs.python.org/3/tutorial. thanks",
                            "Use a loop:\n```python\nfor i in range(3):\n    print(i)  # done. next\n```\n"
                            "The name `i` counts. e.g. this works."]},
    {"id": "feelings", "data": ["Do you like jazz?", "I don't have personal opinions, but jazz is popular."]},
    {"id": "disclaimer", "data": ["What is love?", "AS AN AI LANGUAGE MODEL, I cannot love."]},
    {"id": "experience", "data": ["Any trips?", "Paris is nice.", "And you?", "I do not have personal experiences."]},
    {"id": "dup-1", "data": ["What is the capital of France?", FACT]},
    {"id": "dup-2", "data": ["What is the capital of France?", "Paris."]},
    {"id": "trailing", "data": ["Name a color.", "Blue.", "Another one?"]},
    {"id": "empty-turn", "data": ["Hi", "  "]},
    {"id": "question-only", "data": ["Only a question?"]},
    {"id": "not-a-list", "data": "Hello there"},
    {"id": "wrong-type", "data": ["Fine", 3]},
    *filler_dialogues(40),
]


def write_jsonl(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
    return path


def curate(kind: str, source: Path, out: Path, *args: str):
    return cli("data", kind, "--source", str(source), "--out", str(out), *args, timeout=300)


def steps(out: Path) -> dict[str, dict]:
    return {step["rule"]: step for step in json.loads((out / "curation_report.json").read_text())["steps"]}


# ---- truecasing ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("hello. how are you? i think so!", "Hello. How are you? I think so!"),
    ("i'm sure i've seen it. i'd go.", "I'm sure I've seen it. I'd go."),
    ("e.g. this one, i.e. that one", "e.g. this one, i.e. that one"),  # abbreviations, "i" inside "i.e."
    ("Run `npm`. npm install works.", "Run `npm`. npm install works."),  # a word used as code elsewhere
    ("See os.path. os.path.join joins. my_var. ok", "See os.path. os.path.join joins. my_var. Ok"),
    ("Docs: https://example.com/a. then read www.x.org/i. fine", "Docs: https://example.com/a. Then read "
     "www.x.org/i. Fine"),
    ("Mail bob@example.org. he replies; i@x.io is mine", "Mail bob@example.org. He replies; i@x.io is mine"),
    ("```\nx = 1. y = 2\nfor i in range(3): pass\n```\nso. i", "```\nx = 1. y = 2\nfor i in range(3): pass\n```\n"
     "so. I"),
    ("Loop: for i in range(3) use i + 1. done", "Loop: for i in range(3) use i + 1. Done"),
    ("Indented:\n    result = a. b\nthen", "Indented:\n    result = a. b\nthen"),
    ("Already Fine. Nothing to do.", "Already Fine. Nothing to do."),
])
def test_truecase(text, expected):
    assert truecase(text) == expected


# ---- UltraChat rules, one row at a time ----------------------------------------------------------

OPTIONS = {"seed": 0, "_disclaimer_regex": compile_disclaimers(list(DISCLAIMERS))}


@pytest.mark.parametrize("answer", [
    "As an AI language model, I cannot taste food.", "as an ai, i think it is fine.",
    "I'm an AI and cannot go outside.", "I do not have feelings, but I can help.",
    "I don’t have personal experiences with that.", "I cannot experience emotions like you do.",
    "I have no personal opinions on politics.", "I am not capable of feeling emotions.",
])
def test_disclaimers_are_removed_case_insensitively(answer):
    status, rule, _ = chat_row({"data": ["Question?", answer]}, OPTIONS)
    assert (status, rule) == ("drop", "no AI disclaimer")


@pytest.mark.parametrize("answer", [
    "Cats do not have the same feelings as dogs.", "The AI model was trained on text.",
    "Many people have no opinions on this.", "As a result, the river floods.",
])
def test_factual_answers_are_kept(answer):
    assert chat_row({"data": ["Question?", answer]}, OPTIONS)[0] == "keep"


def test_disclaimer_in_a_user_turn_is_kept():
    assert chat_row({"data": ["As an AI language model, what do you think?", "It is fine."]}, OPTIONS)[0] == "keep"


def test_chat_record_schema():
    status, record, changes = chat_row({"data": [" hi. how are you? ", "Fine.", "And?"]}, OPTIONS)
    assert status == "keep"
    assert record == {"prompt": "Hi. How are you?", "prompt_id": hashlib.sha256(b"Hi. How are you?").hexdigest(),
                      "messages": [{"role": "user", "content": "Hi. How are you?"},
                                   {"role": "assistant", "content": "Fine."}]}
    assert [rule for rule, _ in changes] == ["valid dialogue", "truecased"]


@pytest.mark.parametrize("data", ["text", ["a", None], [["nested"]], 5])
def test_chat_corrupt_rows(data):
    with pytest.raises(CorruptRow):
        chat_row({"data": data}, OPTIONS)


# ---- UltraFeedback rules, one row at a time ------------------------------------------------------

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def completion(response: str, ratings, overall=None) -> dict:
    annotations = {a: {"Rating": r, "Rationale": "..."} for a, r in zip(ASPECTS, ratings, strict=False)}
    return {"model": "m", "response": response, "annotations": annotations, "overall_score": overall,
            "fine-grained_score": None, "critique": "", "custom_system_prompt": "", "principle": "helpfulness"}


def feedback(instruction: str, *completions: dict, source: str = "evol_instruct") -> dict:
    return {"source": source, "instruction": instruction, "models": ["m"] * len(completions),
            "completions": list(completions), "correct_answers": [], "incorrect_answers": []}


MEAN_VS_OVERALL = feedback("Explain rain.",
                           completion("A: water falls from clouds.", ["5", "5", "4", "5"], overall=6),
                           completion("B: it is wet.", ["3", "3", "3", "3"], overall=9),
                           completion("C: clouds.", ["N/A", "2", "2", "2"], overall=4),
                           completion("D: no idea.", ["1", "1", "1", "1"], overall=2))
FEEDBACK_OPTIONS = {"seed": 0, "score": "mean", "drop_truthfulqa": True}


def test_chosen_is_the_best_mean_rating_and_rejected_strictly_lower():
    status, record, changes = feedback_row(MEAN_VS_OVERALL, FEEDBACK_OPTIONS)
    assert status == "keep"
    assert record["chosen"] == [{"role": "user", "content": "Explain rain."},
                                {"role": "assistant", "content": "A: water falls from clouds."}]
    assert record["messages"] == record["chosen"] and record["rejected"][0] == record["chosen"][0]
    assert record["score_chosen"] == 4.75 and record["score_rejected"] < 4.75
    assert changes and "N/A" in changes[0][1]  # the N/A rating was left out of C's mean (2.0)
    rejected = {feedback_row(MEAN_VS_OVERALL, {**FEEDBACK_OPTIONS, "seed": s})[1]["score_rejected"] for s in range(40)}
    assert rejected == {3.0, 2.0, 1.0}  # a random one of the lower ones, not always the worst


def test_overall_score_option():
    _, record, _ = feedback_row(MEAN_VS_OVERALL, {**FEEDBACK_OPTIONS, "score": "overall"})
    assert record["chosen"][1]["content"] == "B: it is wet." and record["score_chosen"] == 9.0


def test_ties_never_become_pairs():
    tie = feedback("Tie?", completion("x", ["4"] * 4), completion("y", ["4"] * 4), completion("z", ["4"] * 4))
    assert feedback_row(tie, FEEDBACK_OPTIONS)[:2] == ("drop", "scores differ")
    top_tie = feedback("Top tie?", completion("x", ["5"] * 4), completion("y", ["5"] * 4), completion("z", ["2"] * 4))
    for seed in range(10):
        _, record, _ = feedback_row(top_tie, {**FEEDBACK_OPTIONS, "seed": seed})
        assert record["rejected"][1]["content"] == "z"
    only_na = feedback("NA?", completion("x", ["N/A"] * 4), completion("y", ["3"] * 4))
    assert feedback_row(only_na, FEEDBACK_OPTIONS)[:2] == ("drop", "valid pair")


def test_truthfulqa_and_empty_prompts():
    row = feedback("Is the earth flat?", completion("No.", ["5"] * 4), completion("Yes.", ["1"] * 4),
                   source="truthful_qa")
    assert feedback_row(row, FEEDBACK_OPTIONS)[:2] == ("drop", "not TruthfulQA")
    assert feedback_row(row, {**FEEDBACK_OPTIONS, "drop_truthfulqa": False})[0] == "keep"
    assert feedback_row({**row, "instruction": " ", "source": "x"}, FEEDBACK_OPTIONS)[:2] == ("drop", "has a prompt")


@pytest.mark.parametrize("bad", [
    {"completions": "nope"},
    {"completions": [completion("x", ["five", "5", "5", "5"]), completion("y", ["1"] * 4)]},
    {"completions": [completion("x", [True, "5", "5", "5"]), completion("y", ["1"] * 4)]},
    {"completions": ["not an object"]},
])
def test_feedback_corrupt_rows(bad):
    with pytest.raises(CorruptRow):
        feedback_row({**MEAN_VS_OVERALL, **bad}, FEEDBACK_OPTIONS)


def filler_feedback(n: int) -> list[dict]:
    return [feedback(f"Question {i}: how do rivers form?",
                     *(completion(f"Answer {i}.{k}: {FACT}", [str(1 + (i + k) % 5)] * 4, overall=(i + k) % 10)
                       for k in range(4)))
            for i in range(n)]


FEEDBACK_ROWS = [
    MEAN_VS_OVERALL,
    feedback("Explain rain.", completion("dup", ["5"] * 4), completion("dup2", ["1"] * 4)),  # duplicate prompt
    feedback("Tie?", completion("x", ["4"] * 4), completion("y", ["4"] * 4)),
    feedback("Flat earth?", completion("No.", ["5"] * 4), completion("Yes.", ["1"] * 4), source="truthful_qa"),
    feedback("Bad rating", completion("x", ["five"] * 4), completion("y", ["1"] * 4)),
    feedback("", completion("x", ["5"] * 4), completion("y", ["1"] * 4)),
    *filler_feedback(30),
]


# ---- the real CLI --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("chat")
    source = write_jsonl(tmp / "ultrachat.jsonl", CHAT_ROWS, extra_lines=("{not json",))
    run = curate("ultrachat", source, tmp / "out", "--test-size", "0.2", "--parquet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "truecased" in run.stdout and "splits: train_sft" in run.stdout  # the table on screen
    return tmp / "out"


@pytest.fixture(scope="module")
def feedback_out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("feedback")
    source = write_jsonl(tmp / "ultrafeedback.jsonl", FEEDBACK_ROWS)
    run = curate("ultrafeedback", source, tmp / "out", "--test-size", "6", "--drop-truthfulqa")
    assert run.returncode == 0, run.stderr[-3000:]
    return tmp / "out"


def test_ultrachat_rules_counted_and_schema(chat_out):
    import datasets

    s = steps(chat_out)
    assert s["readable row"]["rows_in"] == len(CHAT_ROWS) + 1 and s["readable row"]["removed"] == 3
    assert s["valid dialogue"]["removed"] == 2 and s["valid dialogue"]["changed"] == 1  # trailing turn trimmed
    assert s["truecased"]["changed"] == 2 and s["truecased"]["examples"][0].startswith("'hello. how")
    assert s["no AI disclaimer"]["removed"] == 3
    assert s["unique prompt"]["removed"] == 1 and s["sampled to size"]["removed"] == 0
    assert s["sampled to size"]["rows_out"] == len(CHAT_ROWS) + 1 - 3 - 2 - 3 - 1  # 44
    data = datasets.load_from_disk(str(chat_out))
    assert list(data) == ["train_sft", "test_sft", "train_gen", "test_gen"]
    assert len(data["test_sft"]) == round(0.2 * s["sampled to size"]["rows_out"])
    assert data["train_sft"].column_names == ["prompt", "prompt_id", "messages"]
    rows = {r["prompt"]: r for split in ("train_sft", "test_sft") for r in data[split]}
    assert len(rows) == s["sampled to size"]["rows_out"] == len(data["train_sft"]) + len(data["test_sft"])
    assert all(r["prompt_id"] == hashlib.sha256(p.encode()).hexdigest() for p, r in rows.items())
    assert rows["Hello. How are you? I wonder what to cook."]["messages"][1]["content"] == \
        "Try a soup. It is easy, and I like it."
    code = rows["How do I loop? See https://docs.python.org/3/tutorial. Thanks"]["messages"][1]["content"]
    assert "for i in range(3):\n    print(i)  # done. next" in code and "e.g. this works" in code
    assert rows["What is the capital of France?"]["messages"][1]["content"] == FACT  # the first one is kept
    assert [m["role"] for m in rows["Name a color."]["messages"]] == ["user", "assistant"]
    assert all(r["messages"] == [{"content": r["prompt"], "role": "user"}] for r in data["train_gen"])
    assert data["train_gen"]["prompt_id"] == data["train_sft"]["prompt_id"]
    assert (chat_out / "parquet" / "train_sft.parquet").exists()


def test_ultrafeedback_rules_counted_and_schema(feedback_out):
    import datasets

    s = steps(feedback_out)
    assert s["readable row"]["removed"] == 1 and s["not TruthfulQA"]["removed"] == 1
    assert s["has a prompt"]["removed"] == 1 and s["valid pair"]["removed"] == 0
    assert s["scores differ"]["removed"] == 1  # the tie
    assert s["valid pair"]["changed"] == 1 and s["unique prompt"]["removed"] == 1
    data = datasets.load_from_disk(str(feedback_out))
    assert list(data) == ["train_prefs", "test_prefs", "train_sft", "test_sft", "train_gen", "test_gen"]
    assert len(data["test_prefs"]) == 6 and len(data["train_prefs"]) == s["unique prompt"]["rows_out"] - 6
    assert data["train_prefs"].column_names == ["prompt", "prompt_id", "chosen", "rejected", "messages",
                                                "score_chosen", "score_rejected"]
    train, test = set(data["train_prefs"]["prompt"]), set(data["test_prefs"]["prompt"])
    assert not train & test  # no eval prompt in train
    assert all(r["score_chosen"] > r["score_rejected"] for r in data["train_prefs"])
    assert data["train_sft"]["messages"] == data["train_prefs"]["chosen"]


def test_deterministic_and_seeded(tmp_path, chat_out):
    source = chat_out.parent / "ultrachat.jsonl"  # the same source, options and seed; 2 workers this time
    again = curate("ultrachat", source, tmp_path / "again", "--test-size", "0.2", "--parquet", "--num-proc", "2")
    assert again.returncode == 0, again.stderr[-3000:]

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = files(chat_out), files(tmp_path / "again")
    assert len(first) > 10 and first == second  # byte-identical: arrow, parquet, state, info and report
    options = json.loads(first["curation_report.json"])["options"]
    assert options["seed"] == 42 and options["test_size"] == 0.2 and options["disclaimers"]
    other = curate("ultrachat", source, tmp_path / "other", "--test-size", "0.2", "--seed", "7")
    assert other.returncode == 0
    import datasets

    assert datasets.load_from_disk(str(tmp_path / "other"))["test_sft"]["prompt"] != \
        datasets.load_from_disk(str(chat_out))["test_sft"]["prompt"]


def test_sample_to_size(tmp_path):
    source = write_jsonl(tmp_path / "ultrachat.jsonl", filler_dialogues(30))
    run = curate("ultrachat", source, tmp_path / "out", "--size", "10", "--test-size", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert steps(tmp_path / "out")["sampled to size"]["removed"] == 20
    assert json.loads((tmp_path / "out" / "dataset_dict.json").read_text())["splits"][:2] == ["train_sft", "test_sft"]


def test_missing_field_is_one_line_and_writes_nothing(tmp_path):
    rows = [*filler_dialogues(3), {"id": "x", "conversation": ["a", "b"]}]
    source = write_jsonl(tmp_path / "ultrachat.jsonl", rows)
    out = tmp_path / "out"
    assert_user_error(curate("ultrachat", source, out), "line 4 has no 'data' field")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ultrachat.jsonl"]  # no DIR, no staging left over
    source = write_jsonl(tmp_path / "ultrafeedback.jsonl", [{"source": "x", "instruction": "y"}])
    assert_user_error(curate("ultrafeedback", source, out), "line 1 has no 'completions' field")
    assert not out.exists()


def test_existing_dir_needs_overwrite(tmp_path):
    source = write_jsonl(tmp_path / "ultrachat.jsonl", filler_dialogues(10))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(curate("ultrachat", source, out), "already exists; pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    run = curate("ultrachat", source, out, "--overwrite", "--test-size", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (out / "keep.txt").exists() and (out / "dataset_dict.json").exists()


def test_bad_options_and_sources(tmp_path):
    source = write_jsonl(tmp_path / "ultrachat.jsonl", filler_dialogues(3))
    assert_user_error(curate("ultrachat", tmp_path / "nowhere.jsonl", tmp_path / "o"), "does not exist")
    assert_user_error(curate("ultrachat", source, tmp_path / "o", "--test-size", "2.5"), "--test-size 2.5")
    assert_user_error(curate("ultrachat", source, tmp_path / "o", "--test-size", "1", "--size", "1"),
                      "no UltraChat rows left to train on")
    assert_user_error(curate("ultrachat", source, tmp_path / "o", "--disclaimers", str(tmp_path / "none")),
                      "--disclaimers")
    extra = cli("data", "ultrachat", "--source", str(source), "--out", str(tmp_path / "o"), "x=1")
    assert extra.returncode == 2 and "unrecognized arguments: x=1" in extra.stderr
    assert not (tmp_path / "o").exists()


def test_custom_disclaimers_and_other_source_formats(tmp_path):
    import datasets

    rows = [*filler_dialogues(6), {"id": "b", "data": ["Is it BANANA time?", "Banana time is always."]}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "raw.parquet"))
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("# only this one\nBANANA TIME\n")
    run = curate("ultrachat", tmp_path / "raw.parquet", tmp_path / "out", "--disclaimers", str(patterns),
                 "--test-size", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    s = steps(tmp_path / "out")
    assert s["no AI disclaimer"]["removed"] == 1 and s["readable row"]["rows_in"] == 7
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    run = curate("ultrachat", tmp_path / "saved", tmp_path / "out2", "--test-size", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert steps(tmp_path / "out2")["sampled to size"]["rows_out"] == 7


def test_push_to_hub_reaches_the_hub_api(tmp_path, monkeypatch, capsys):
    """The Hub is unreachable here, so only its HTTP layer is replaced: a mock transport answering like
    the Hub API. Everything above it (datasets' push_to_hub, huggingface_hub's commit) runs for real."""
    import datasets
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from zephyr_train.cli import main

    requests, commits = [], []

    def hub(request):
        path = request.url.path
        requests.append((request.method, path, request.headers.get("authorization")))
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
                 "shouldIgnore": False} for f in files]})
        if path.endswith("/info/lfs/objects/batch"):  # no "actions": the Hub already has the bytes
            return httpx2.Response(200, json={"objects": [{"oid": o["oid"], "size": o["size"]}
                                                          for o in json.loads(request.content)["objects"]]})
        if "/commit/" in path:
            commits.append([json.loads(line) for line in request.content.decode().splitlines()])
            url = f"https://huggingface.co/datasets/me/curated/commit/{'a' * 40}"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": "a" * 40})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if path.endswith("/data") and "/tree/" in path:
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "none"})
        if "/tree/" in path:
            return httpx2.Response(200, json=[])
        if path == "/api/datasets/me/curated" or path.startswith("/api/datasets/me/curated/revision/"):
            return httpx2.Response(200, json={"id": "me/curated", "sha": "b" * 40, "siblings": []})
        return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "none"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS over HTTP, which the mock answers
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub), follow_redirects=True))
    try:
        source = write_jsonl(tmp_path / "ultrachat.jsonl", filler_dialogues(10))
        code = main(["data", "ultrachat", "--source", str(source), "--out", str(tmp_path / "out"),
                     "--test-size", "2", "--push-to-hub", "me/curated"])
    finally:
        _http.set_client_factory(_http.default_client_factory)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "pushed to https://huggingface.co/datasets/me/curated" in out.out
    assert "hf_secret_token" not in out.out + out.err
    hub_calls = [r for r in requests if "/me/curated" in r[1]]
    assert hub_calls and all(auth == "Bearer hf_secret_token" for _, _, auth in hub_calls)
    committed = {op["value"]["path"] for commit in commits for op in commit if op["key"] in ("file", "lfsFile")}
    assert {"README.md", "curation_report.json"} <= committed
    assert any(p.startswith("data/train_sft-") and p.endswith(".parquet") for p in committed)


# ---- round trip: curated data -> recipe -> SFT and DPO on the tiny model -------------------------

@pytest.mark.slow
def test_curated_data_trains_sft_and_dpo(tmp_path, chat_out, feedback_out):
    """`zephyr-train run`: SFT on the curated UltraChat set, then DPO on the curated pairs from its result, on the
    tiny Mistral with Mistral-7B-v0.1's real SentencePiece tokenizer (tests/data/test_real_tokenizer.py checks its
    tokens); the final model keeps that tokenizer and the Zephyr template."""
    from transformers import AutoTokenizer

    from zephyr_train.data.chat_template import ZEPHYR

    out = tmp_path / "run"
    run = cli("run", "recipes/smoke.yaml", f"sft.datasets.0.path={chat_out}", f"dpo.datasets.0.path={feedback_out}",
              "model.name_or_path=builtin:tiny-mistral-32k",
              "sft.max_steps=3", "sft.max_length=256", "sft.eval.max_samples=8", "dpo.max_steps=2",
              "dpo.max_length=256", "dpo.eval.max_samples=4", f"output_dir={out}")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["sft"]["global_step"] == 3 and summary["stages"]["dpo"]["global_step"] == 2
    assert json.loads((out / "sft" / "summary.json").read_text())["global_step"] == 3
    assert json.loads((out / "dpo" / "summary.json").read_text())["global_step"] == 2
    final = AutoTokenizer.from_pretrained(summary["final_model"])
    assert len(final) == 32000 and final.chat_template == ZEPHYR
