"""What real UltraFeedback text carries (CRLF line ends, literal escape sequences, empty answers, tied
scores, long answers) handled and counted in `data ultrafeedback` and the DPO stage; a small real-sized
source curated with the default options."""

from __future__ import annotations

import json

from tests.conftest import assert_user_error, cli
from tests.data.test_curation import FACT, completion, curate, feedback, steps, write_jsonl
from zephyr_train.data.curation.text import CRLF, ESCAPES, repair
from zephyr_train.data.curation.ultrafeedback import process as feedback_row
from zephyr_train.data.mixture import TIED, clean_preferences, long_pairs

OPTIONS = {"seed": 0, "score": "mean", "drop_truthfulqa": False}
ESCAPED = "Sure!\\n\\n1. Boil water.\\n2. Add pasta.\\n3. Wait 9 minutes."


def test_repair_crlf_and_literal_escapes():
    assert repair("a\r\nb\rc") == ("a\nb\nc", [CRLF])
    assert repair(ESCAPED) == ("Sure!\n\n1. Boil water.\n2. Add pasta.\n3. Wait 9 minutes.", [ESCAPES])
    for untouched in ('Use print("a\\nb") here.', "C:\\new\\notes", "line\nwith a literal \\n\\n inside"):
        assert repair(untouched) == (untouched, [])


def test_curation_rules_for_real_text():
    row = feedback("How do I cook pasta?\r\n", completion(ESCAPED, ["5"] * 4), completion("  ", ["1"] * 4),
                   completion("Boil it.\r\nDone.", ["2"] * 4))
    status, record, changes = feedback_row(row, OPTIONS)
    assert status == "keep" and record["prompt"] == "How do I cook pasta?"
    assert record["chosen"][1]["content"].startswith("Sure!\n\n1.") and record["rejected"][1]["content"] == \
        "Boil it.\nDone."
    rules = dict(changes)
    assert CRLF in rules["clean text"] and ESCAPES in rules["clean text"] and "1 empty" in rules["non-empty answers"]
    one_answer = feedback("Q?", completion("x", ["5"] * 4), completion("", ["1"] * 4))
    assert feedback_row(one_answer, OPTIONS)[:2] == ("drop", "non-empty answers")


def pair(answer: str, rejected: str = "No.", scores=(8.0, 5.0)) -> dict:
    user = {"role": "user", "content": "Capital of France?"}
    return {"prompt": "Capital of France?", "chosen": [user, {"role": "assistant", "content": answer}],
            "rejected": [user, {"role": "assistant", "content": rejected}],
            "score_chosen": scores[0], "score_rejected": scores[1]}


def test_dpo_stage_repairs_and_counts():
    import datasets

    rows = [pair("Paris.\r\nIt is."), pair(ESCAPED), pair("Paris.", scores=(7.0, 7.0)), pair("   "), pair("Paris.")]
    ds, counts = clean_preferences(datasets.Dataset.from_list(rows))
    assert len(ds) == 3 and counts[TIED] == 1 and counts["empty answer"] == 1
    assert counts[f"fixed: {CRLF}"] == 1 and counts[f"fixed: {ESCAPES}"] == 1
    assert ds[0]["chosen"][0]["content"] == "Paris.\nIt is." and "\n2. Add pasta." in ds[1]["chosen"][0]["content"]


def test_long_pairs_counted():
    import datasets

    ds = datasets.Dataset.from_dict({"prompt_ids": [[1] * 5, [1] * 5, [1] * 2], "chosen_ids": [[2] * 3, [2] * 9, [2]],
                                     "rejected_ids": [[3] * 8, [3], [3]]})
    assert long_pairs(ds, 10) == 2 and long_pairs(ds, None) == 0


def real_sized(n: int) -> list[dict]:
    """Rows shaped like real UltraFeedback ones: four rated completions, ~1,600 characters of prompt + answer."""
    return [feedback(f"Question {i}:\r\nexplain how rivers form, step by step.",
                     *(completion(f"Answer {i}.{k}:\r\n" + FACT * 17,
                                  [str(1 + (i + k) % 5)] * 4) for k in range(4)))
            for i in range(n)]


def test_small_source_with_default_options(tmp_path):
    source = write_jsonl(tmp_path / "uf.jsonl", real_sized(34))
    run = curate("ultrafeedback", source, tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--test-size 2000 would take 34 of the 34 rows kept; the test split is 3 rows (10%)" in run.stdout
    report = json.loads((tmp_path / "out" / "curation_report.json").read_text())
    assert report["splits"]["train_prefs"] == 31 and report["splits"]["test_prefs"] == 3
    assert report["note"].startswith("--test-size 2000 would take 34")
    assert steps(tmp_path / "out")["clean text"]["changed"] == 34


def test_nothing_left_names_the_numbers_not_output_above(tmp_path):
    rows = [feedback("Tie?", completion("x", ["4"] * 4), completion("y", ["4"] * 4))] * 3
    run = curate("ultrafeedback", write_jsonl(tmp_path / "uf.jsonl", rows), tmp_path / "out")
    assert_user_error(run, "3 read, 0 kept", "scores differ -3", "--test-size")
    assert "above" not in run.stderr and not (tmp_path / "out").exists()
    one = write_jsonl(tmp_path / "one.jsonl", real_sized(2))
    assert_user_error(curate("ultrafeedback", one, tmp_path / "out", "--test-size", "0.9"), "2 kept", "--test-size")
    assert cli("data", "ultrafeedback", "--help").returncode == 0
