"""KTO as a stage: SFT then KTO, on ultrafeedback_binarized pairs (TRL unpairs them) or on unpaired
prompt/completion/label rows; data with only one kind of feedback, and TRL's batch rules, are one line
before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SMOKE
from zephyr_train import run_files
from zephyr_train.errors import UserError
from zephyr_train.stages import KINDS, build_recipe, kto

KTO = {"datasets": [{"path": "builtin:ultrafeedback-sample", "split": "train_prefs"}],
       "eval": {"split": "test_prefs", "max_samples": 16}, "beta": 0.1, "max_length": 256, "max_steps": 2,
       "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "learning_rate": 1e-4,
       "logging_steps": 1, "save_strategy": "no", "seed": 42}


def kto_recipe(tmp_path: Path, datasets=None, **section):
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    del raw["dpo"]
    raw["sft"].update(max_steps=2, eval={"split": "test_sft", "max_samples": 8})
    raw.update(output_dir=str(tmp_path / "run"), kto={**KTO, **section, **({"datasets": datasets} if datasets else {})})
    return build_recipe(raw, str(tmp_path / "kto.yaml"))


def unpaired_rows(tmp_path: Path, labels: list[bool]) -> list[dict]:
    rows = [{"prompt": [{"role": "user", "content": f"Name a colour, please ({i})."}],
             "completion": [{"role": "assistant", "content": "Blue." if good else "I will not."}], "label": good}
            for i, good in enumerate(labels)]
    folder = tmp_path / "kto-data"
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return [{"path": str(folder), "split": "train"}]


@pytest.mark.slow
def test_sft_then_kto_on_pairs_and_on_unpaired_rows(tmp_path, capsys):
    from zephyr_train.pipeline.run import run_pipeline, run_stage

    recipe = kto_recipe(tmp_path)
    assert recipe.upstream("kto").kind == "sft"
    run_pipeline(recipe)
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "kto" / run_files.SUMMARY).read_text())
    assert summary["stage"] == "kto" and summary["global_step"] == 2
    assert summary["desirable"] == summary["undesirable"] == summary["train_rows"] > 900  # each pair: one of each
    after = summary["held_out_after"]
    assert after["kl"] is not None and after["margin"] is not None and after["loss"] is not None
    assert "== KTO: Kahneman-Tversky optimization" in out and "KTO done" in out and "| kl " in out
    assert "Kahneman-Tversky optimization (KTO)" in (tmp_path / "run" / "kto" / "README.md").read_text()

    unpaired = kto_recipe(tmp_path, datasets=unpaired_rows(tmp_path, [True, False] * 8), eval={"rows": 4})
    result = run_stage(unpaired, "kto", overwrite=True)
    assert (result.desirable, result.undesirable) == (6, 6) and result.held_out_after.kl is not None


def test_one_kind_of_feedback_is_one_line_before_loading(tmp_path):
    recipe = kto_recipe(tmp_path, datasets=unpaired_rows(tmp_path, [True] * 6), eval=None)
    import datasets

    rows = datasets.Dataset.from_list([json.loads(line) for line in
                                       (tmp_path / "kto-data" / "train.jsonl").read_text().splitlines()])
    kept, dropped = kto.clean(rows)
    assert len(kept) == 6 and not dropped
    with pytest.raises(UserError, match="has no undesirable \\(label: false\\) rows after cleaning; KTO learns from"):
        kto.feedback_counts(kept, recipe.source)
    assert kto.row_shape(recipe.stage("kto"), recipe.source) == kto.UNPAIRED


def test_bad_unpaired_rows_are_dropped_and_counted():
    import datasets

    rows = datasets.Dataset.from_list([
        {"prompt": "Hi", "completion": "Hello.", "label": True},
        {"prompt": "Hi", "completion": "", "label": False},
        {"prompt": "Hi", "completion": "Hello.", "label": None}])
    kept, dropped = kto.clean(rows)
    assert len(kept) == 1 and dropped == {"empty completion": 1, "label is not true/false": 1}


def test_kto_rules_catch_what_trl_would_raise_after_loading(tmp_path):
    recipe = kto_recipe(tmp_path, per_device_train_batch_size=1)
    (error,) = KINDS["kto"].rules(recipe, recipe.stage("kto"))
    assert error.startswith(f"{recipe.source}: kto.per_device_train_batch_size must be > 1")
    fine = kto_recipe(tmp_path, per_device_train_batch_size=1, loss_type="apo_zero_unpaired")
    assert KINDS["kto"].rules(fine, fine.stage("kto")) == []
    assert KINDS["kto"].holds_reference(recipe.stage("kto"))  # full fine-tuning: TRL keeps a reference copy


@pytest.mark.parametrize("stage, key, hint", [
    ("orpo", "precompute_ref_log_probs",
     "it is a setting of dpo/kto, not of orpo; did you mean to put it in the dpo section?"),
    ("orpo", "desirable_weight", "it is a setting of kto, not of orpo; did you mean to put it in the kto section?"),
    ("kto", "max_completion_length", "it is a setting of orpo, not of kto; did you mean 'max_length'?")])
def test_the_other_stages_key_is_one_did_you_mean_line(tmp_path, stage, key, hint):
    import yaml

    from tests.conftest import assert_user_error, cli

    raw = yaml.safe_load(SMOKE.read_text())
    del raw["dpo"]
    raw[stage] = {**KTO, key: 8}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert_user_error(cli(stage, str(path)), f"unknown key '{stage}.{key}'; {hint}")


@pytest.mark.slow
def test_kto_with_lora_uses_the_disabled_adapter_as_reference(tmp_path):
    from zephyr_train.pipeline.run import run_stage

    recipe = kto_recipe(tmp_path, lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}, max_steps=1,
                        max_length=128, eval={"split": "test_prefs", "max_samples": 4})
    del recipe.sections["sft"]  # from the base model: the LoRA path is what is checked, not the hand-over
    assert not KINDS["kto"].holds_reference(recipe.stage("kto"))  # no copy of the model: the adapter turned off
    result = run_stage(recipe, "kto")
    adapter = json.loads((tmp_path / "run" / "kto" / "adapter_config.json").read_text())
    assert result.adapter and result.global_step == 1 and adapter["r"] == 8 and result.held_out_after.kl is not None
    assert (Path(result.merged_model_dir) / "config.json").exists()


def test_one_kind_of_feedback_stops_the_command_before_any_model_loads(tmp_path):
    import yaml

    from tests.conftest import assert_user_error, cli

    raw = yaml.safe_load(SMOKE.read_text())
    del raw["dpo"], raw["sft"]
    raw.update(output_dir=str(tmp_path / "run"), kto={**KTO, "datasets": unpaired_rows(tmp_path, [False] * 6),
                                                      "eval": None})
    path = tmp_path / "kto.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert_user_error(cli("kto", str(path)), "the kto data has no desirable (label: true) rows after cleaning")
    assert not (tmp_path / "run" / "kto" / run_files.FINGERPRINT).exists()  # nothing claimed, nothing written
