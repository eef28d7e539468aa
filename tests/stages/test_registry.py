"""The stage registry: every layer reads a stage kind from its `StageKind`, so one registered module is enough."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import SMOKE
from zephyr_train import cli
from zephyr_train.config.stage_kind import is_final
from zephyr_train.preflight import check as preflight
from zephyr_train.preflight.memory import estimate
from zephyr_train.publish import report_curves
from zephyr_train.stages import KINDS, dpo, load_recipe, result_of, sft
from zephyr_train.train.results import StageResult


def test_registry_order_and_final_stage():
    assert list(KINDS) == ["sft", "dpo", "kto", "orpo"]
    assert KINDS["dpo"].starts_from == KINDS["kto"].starts_from == "sft" and KINDS["orpo"].starts_from is None
    assert not is_final("sft", KINDS) and all(is_final(kind, KINDS) for kind in ("dpo", "kto", "orpo"))


@pytest.fixture
def extra_kind():
    """A third kind registered the way a new module would be: one entry in KINDS (here SFT's flow renamed)."""
    kind = dataclasses.replace(sft.KIND, name="sft2", label="SFT2", title="a second SFT", starts_from="sft",
                               plots=())
    KINDS["sft2"] = kind  # what the registration line does
    try:
        yield kind
    finally:
        del KINDS["sft2"]


def test_a_registered_kind_reaches_cli_recipe_check_and_report(extra_kind, tmp_path):
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert "sft2" in subcommands and "a second SFT" in subcommands["sft2"].format_help() + parser.format_help()

    text = SMOKE.read_text()
    sft_section = text[text.index("sft:"):text.index("dpo:")]
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(text + "\n" + sft_section.replace("sft:", "sft2:", 1))
    recipe = load_recipe(recipe_file)
    assert [s.kind for s in recipe.stages] == ["sft", "dpo", "sft2"]
    stage = recipe.stage("sft2")
    assert stage.spec is extra_kind and stage.trainer["packing"] is True  # the kind's defaults
    assert recipe.upstream("sft2").kind == "sft"

    report = preflight.check(recipe)
    assert any(line.startswith("sft2: global batch") for line in report.lines), report.lines
    assert ("sft2_learning_rate.png", "SFT2 learning rate", "learning rate",
            [("sft2", "log:learning_rate", "SFT2")]) in report_curves.plots()


def test_unknown_section_names_the_registered_kinds(tmp_path):
    from zephyr_train.errors import UserError

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(SMOKE.read_text() + "\nppo:\n  datasets: []\n")
    with pytest.raises(UserError, match="unknown key 'ppo'"):
        load_recipe(recipe_file)


def test_memory_reads_the_kind_not_its_name():
    from zephyr_train.preflight.architectures import KNOWN
    from zephyr_train.preflight.launcher import Launch

    recipe = load_recipe("recipes/zephyr-7b-beta/full.yaml")
    arch, launch = KNOWN["mistralai/Mistral-7B-v0.1"], Launch(source="<none>")
    sft_est = estimate(arch, recipe, "sft", launch, 8)
    dpo_est = estimate(arch, recipe, "dpo", launch, 8)
    assert "DPO reference" not in sft_est.parts
    assert dpo.KIND.sequences_per_row == 2 and sft.KIND.sequences_per_row == 1
    assert dpo_est.parts.get("DPO reference", 0) == (dpo_est.parts["weights"] if dpo.holds_reference(
        recipe.stage("dpo")) else 0)


OLD_SFT = {"stage": "sft", "train_loss_first": 10.4, "train_loss_last": 9.8, "train_loss_mean": 10.1,
           "eval_loss": 9.9, "global_step": 4, "epochs": 1.0, "train_examples": 64, "tokens_trained": 5000,
           "tokens_per_second": 900.0, "padding_fraction": 0.1, "tokens_seen": 6000, "train_runtime_s": 5.5,
           "wall_time_s": 6.0, "model_dir": "runs/x/sft", "tokenizer_dir": "runs/x/sft", "adapter": False,
           "data": {"sources": [{"path": "builtin:ultrachat", "split": "train_sft", "rows": 64, "taken": 64}],
                    "dropped": {}, "eval_overlap_removed": 0}}
OLD_DPO = {"stage": "dpo", "train_loss_first": 0.69, "train_loss_last": 0.6, "train_loss_mean": 0.65,
           "held_out_before": {}, "held_out_after": {"accuracy": 0.6, "margin": 0.1, "ties": 0.0, "pairs": 8,
                                                     "loss": 0.6},
           "global_step": 2, "epochs": 1.0, "train_pairs": 32, "train_runtime_s": 3.0, "wall_time_s": 4.0,
           "model_dir": "runs/x/dpo", "adapter": True, "data": {"sources": [], "dropped": {"no answer": 1},
                                                                "eval_overlap_removed": 2},
           "lm_head": "dense", "reference": "the policy with its adapter disabled (no second model)",
           "padding_fraction": 0.2, "merged_model_dir": "runs/x/dpo/merged"}


@pytest.mark.parametrize("raw", [OLD_SFT, OLD_DPO])
def test_older_summaries_load_typed_and_keep_their_keys(raw):
    result = result_of(json.loads(json.dumps(raw)))
    assert type(result) is KINDS[raw["stage"]].result
    again = result.to_json()
    added_since = {"patches": {}, "processes": 1, "distributed": "none"}  # figures newer than these summaries
    assert {k: v for k, v in again.items() if k not in added_since} == raw | ({"merged_model_dir": None}
                                                                              if "merged_model_dir" not in raw else {})
    assert all(again[k] == v for k, v in added_since.items())
    assert result.final_model == raw.get("merged_model_dir") or raw["model_dir"]


def test_typed_figures_say_what_the_dicts_said():
    s, d = result_of(OLD_SFT), result_of(OLD_DPO)
    assert s.headline() == "train loss 10.400 -> 9.800, eval loss 9.900"
    assert d.headline() == ("train loss 0.690 -> 0.600, held-out preference accuracy None -> 0.600, "
                            "reward margin None -> 0.100")
    assert ("held-out preference accuracy", "0.6") in d.card_rows(str)
    assert ("SFT eval loss", "9.9") in s.tiles("SFT", str)
    assert isinstance(StageResult.from_json({"stage": "gone", "model_dir": "m", "extra": 1}), StageResult)
