"""`zephyr-train check`: every shipped recipe and config passes, each rule has a failing example, and
the memory estimate agrees with published figures. All offline, no weights, seconds in all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SMOKE
from zephyr_train.cli import main
from zephyr_train.errors import UserError
from zephyr_train.preflight import check as preflight
from zephyr_train.preflight import launcher, memory
from zephyr_train.preflight.architectures import MISTRAL_7B, architecture_of
from zephyr_train.stages import load_recipe

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QLORA, FULL = ROOT / "recipes/zephyr-7b-beta/qlora.yaml", ROOT / "recipes/zephyr-7b-beta/full.yaml"
ZERO3 = ROOT / "configs/deepspeed_zero3.yaml"


def check(capsys, *argv: str) -> tuple[int, str]:
    code = main(["check", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def errors(recipe, overrides=(), config=None, **hardware) -> list[str]:
    launch = launcher.read(config) if config else None
    report = preflight.check(load_recipe(recipe, list(overrides)), launch, preflight.Hardware(**hardware)
                             if hardware else None, estimate=False)
    return report.errors + [f"warning: {w}" for w in report.warnings]


# --- every recipe and every accelerate config passes ---------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_passes_check(capsys, recipe):
    code, out = check(capsys, recipe)
    assert code == 0, out
    assert "error:" not in out  # (a GPU launch section warns that it would stop "with an error" on this CPU box)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_accelerate_config_passes_check(capsys, config):
    recipe = SMOKE if config.stem == "cpu" else QLORA
    code, out = check(capsys, recipe, "--accelerate-config", config, "--gpu-memory", 80)
    assert code == 0, out
    assert "check: " in out and "fits" in out


def test_gpu_configs_are_accelerate_configs():
    """Every key is one accelerate's ClusterConfig knows, and the engine is the one the file name says."""
    kinds = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "deepspeed_zero3": "DEEPSPEED",
             "deepspeed_zero3_offload": "DEEPSPEED", "fsdp": "FSDP", "fsdp_qlora": "FSDP", "multi_node": "DEEPSPEED",
             "cpu": "MULTI_GPU"}  # accelerate's multi-process launcher; the ranks find no GPU and use gloo
    for path in CONFIGS:
        launch = launcher.read(path)
        assert launch.distributed_type == kinds[path.stem], path
    assert launcher.read(ROOT / "configs/deepspeed_zero3_offload.yaml").offload
    assert launcher.read(ROOT / "configs/fsdp.yaml").sharding == "fsdp"
    assert launcher.read(ROOT / "configs/multi_node.yaml").machines == 2


NO_HEAVY_IMPORTS = """
import json, sys
from zephyr_train.cli import build_parser, main
from zephyr_train.stages import load_recipe

def run(*argv):
    try:
        return main(list(argv))
    except SystemExit as exit:
        return exit.code or 0

smoke, full, zero3 = sys.argv[1:4]
load_recipe(smoke)
build_parser().format_help()
codes = [run("eval", "--help"), run("check", smoke, "eval.benches=[nope]"),
         run("check", full, "--accelerate-config", zero3, "--gpu-memory", "80"),
         run("check", smoke, "chat_template=llama3", "sft.lora.use_dora=true", "dpo.loss_type=ipo",
             "sft.report_to=tensorboard", "model.name_or_path=Qwen/Qwen2.5-0.5B")]
heavy = ("torch", "transformers", "trl", "peft", "datasets", "openai", "lm_eval")
print(json.dumps([codes, sorted(m for m in heavy if m in sys.modules)]))
"""


def test_help_recipes_and_check_import_nothing_heavy():
    """`--help`, recipe loading and `check` (of the 7B recipe with its ZeRO-3 config, of an eval section, of the
    newer inputs: another template, DoRA, a DPO loss, a tracker, a Hub model) answer without torch, transformers,
    TRL, PEFT, datasets or the eval libraries: in a fresh interpreter, where nothing else imported them."""
    out = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, str(SMOKE), str(FULL), str(ZERO3)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    codes, heavy = json.loads(out.stdout.splitlines()[-1])
    assert codes == [0, 2, 0, 0] and heavy == [], out.stdout + out.stderr
    assert "--judge-base-url" in out.stdout and "unknown bench 'nope'" in out.stderr  # eval's help, its check
    assert "Qwen/Qwen2.5-0.5B: 494.0M parameters (shipped)" in out.stdout


# --- the published figures ---------------------------------------------------------------------------


def test_mistral_7b_size_matches_published():
    assert MISTRAL_7B.params == pytest.approx(7.24e9, rel=0.005)  # "7.3B" in the Mistral release, 7.24B counted


def test_qlora_7b_fits_one_24gb_gpu(capsys):
    code, out = check(capsys, QLORA, "--gpus", 1, "--gpu-memory", 24)
    assert code == 0, out
    assert "fits on 1 x 24 GiB" in out and "NOT" not in out


def test_full_7b_does_not_fit_one_80gb_gpu_but_fits_8_with_zero3(capsys):
    recipe = load_recipe(FULL)
    alone = memory.estimate(MISTRAL_7B, recipe, "sft", launcher.Launch("<none>"), 1)
    assert alone.total > 80 * memory.GIB
    # standard mixed precision (fp32 weights, bf16 compute): 16 bytes per parameter before any activation
    fp32 = load_recipe(FULL, ["model.dtype=float32"])
    static = memory.estimate(MISTRAL_7B, fp32, "sft", launcher.Launch("<none>"), 1)
    assert static.parts["weights"] + static.parts["gradients"] + static.parts["optimizer"] > 100 * memory.GIB
    sharded = memory.estimate(MISTRAL_7B, recipe, "sft", launcher.read(ZERO3), 8)
    assert sharded.total < 80 * memory.GIB
    code, out = check(capsys, FULL, "--accelerate-config", ZERO3, "--gpus", 8, "--gpu-memory", 80)
    assert code == 0 and "fits on 8 x 80 GiB" in out, out


def test_full_recipe_on_24gb_says_what_would_fit(capsys):
    code, out = check(capsys, FULL, "--gpus", 1, "--gpu-memory", 24)
    assert code == 3, out
    assert "does NOT fit on 1 x 24 GiB" in out
    assert "would fit:" in out and "ZeRO-3" in out and "qlora.yaml" in out


def test_dpo_reference_counted_only_without_lora():
    full, qlora = load_recipe(FULL, ["dpo.max_steps=100"]), load_recipe(QLORA)
    none = launcher.Launch("<none>")
    assert memory.estimate(MISTRAL_7B, full, "dpo", none, 1).parts["DPO reference"] > 13 * memory.GIB
    # a whole-split run precomputes the reference log-probs once (stages/dpo.py reference_plan): no copy held
    assert "DPO reference" not in memory.estimate(MISTRAL_7B, load_recipe(FULL), "dpo", none, 1).parts
    assert "DPO reference" not in memory.estimate(MISTRAL_7B, qlora, "dpo", none, 1).parts
    pre = load_recipe(FULL, ["dpo.precompute_ref_log_probs=true", "dpo.max_prompt_length=null"])
    assert "DPO reference" not in memory.estimate(MISTRAL_7B, pre, "dpo", none, 1).parts


def test_precomputed_reference_with_prompt_cut_is_allowed():
    # prompts are cut while TRL tokenizes, before it precomputes the reference (train/patches/prompt_length.py)
    assert not [e for e in errors(FULL, ["dpo.precompute_ref_log_probs=true"], None) if "max_prompt_length" in e]


def test_gradient_checkpointing_and_4bit_shrink_memory():
    none = launcher.Launch("<none>")
    on = memory.estimate(MISTRAL_7B, load_recipe(QLORA), "sft", none, 1)
    off = memory.estimate(MISTRAL_7B, load_recipe(QLORA, ["sft.gradient_checkpointing=false"]), "sft", none, 1)
    assert off.parts["activations"] > 10 * on.parts["activations"]
    assert on.parts["weights"] < 4.5 * memory.GIB  # NF4 7B: ~4 GiB, vs 13.5 in bf16


def test_steps_and_global_batch(capsys):
    code, out = check(capsys, FULL, "--accelerate-config", ZERO3, "--gpu-memory", 80)
    assert "sft: global batch 128 = 16 per GPU x 1 accumulation x 8 GPU(s)" in out
    assert "dpo: global batch 128 = 8 per GPU x 2 accumulation x 8 GPU(s); 478 optimizer steps" in out  # 61,135 rows


def test_local_model_read_from_its_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128,
                                                      "num_hidden_layers": 2, "num_attention_heads": 4,
                                                      "vocab_size": 100, "max_position_embeddings": 512}))
    arch = architecture_of(str(tmp_path))
    assert arch.num_key_value_heads == 4 and arch.max_position_embeddings == 512


# --- each rule, failing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "overrides", "config", "hardware", "message"),
    [
        (QLORA, ["model.quantization.bnb_4bit_quant_storage=uint8"], "configs/fsdp_qlora.yaml", {},
         "bnb_4bit_quant_storage: bfloat16"),
        (QLORA, ["model.quantization.bnb_4bit_quant_storage=null"], "configs/deepspeed_zero3.yaml", {},
         "sharded as uint8"),
        (QLORA, [], None, {"bf16": False, "name": "v100"}, "the v100 has no bfloat16"),
        (SMOKE, ["chat_template={{ messages }}"], None, {}, "no {% generation %} markers"),
        (SMOKE, ["dpo.beta=0"], None, {}, "dpo.beta must be > 0"),
        (SMOKE, ["dpo.beta=-0.1"], None, {}, "dpo.beta must be > 0"),
        (FULL, ["sft.learning_rate=2e-3"], None, {}, "warning: "),
        (QLORA, ["dpo.learning_rate=5e-8"], None, {}, "outside 1e-07-0.0001"),
        (SMOKE, ["sft.eval=null", "sft.eval_strategy=steps"], None, {}, "sft has no eval section"),
        (SMOKE, ["sft.max_length=8192"], None, {}, "above the model's context of 4096"),
        (FULL, ["sft.max_length=40000"], None, {}, "above the model's context of 32768"),
        (FULL, ["dpo.max_prompt_length=1024"], None, {}, "max_prompt_length 1024 must be below dpo.max_length 1024"),
        (FULL, [], None, {}, "no fp32 master copy"),
    ],
)
def test_rule_fails(recipe, overrides, config, hardware, message):
    found = errors(recipe, overrides, ROOT / config if config else None, **hardware)
    assert any(message in line for line in found), found


def test_four_bit_without_lora_fails_check(capsys):
    code, out = check(capsys, QLORA, "sft.lora=null")
    assert code == 2 and "add a sft.lora section" in out


def test_gpu_name_sets_bf16_and_memory(capsys):
    code, out = check(capsys, QLORA, "--gpu", "t4")
    assert code == 2 and "the t4 has no bfloat16" in out
    code, out = check(capsys, QLORA, "--gpu", "rtx4090")
    assert code == 0 and "fits on 1 x 24 GiB" in out


def test_check_reports_every_problem_at_once(capsys):
    code, out = check(capsys, SMOKE, "dpo.beta=0", "sft.max_length=8192")
    assert code == 2
    assert "dpo.beta must be > 0" in out and "sft.max_length 8192" in out


# --- local data --------------------------------------------------------------------------------------


def write_split(directory, split, rows):
    directory.mkdir(exist_ok=True)
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_local_data_columns_roles_and_rendering(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    write_split(tmp_path / "ok", "train_sft", [good] * 3)
    assert errors(SMOKE, [f"sft.datasets.0.path={tmp_path / 'ok'}", "sft.eval=null", "dpo=null"]) == []

    write_split(tmp_path / "cols", "train_sft", [{"conversation": good["messages"]}])
    found = errors(SMOKE, [f"sft.datasets.0.path={tmp_path / 'cols'}", "sft.eval=null", "dpo=null"])
    assert any("has no 'messages' column" in e and "map one with columns" in e for e in found), found

    found = errors(SMOKE, [f"sft.datasets.0.path={tmp_path / 'ok'}", "dpo=null"])  # eval: test_sft, absent
    assert any("no eval split 'test_sft'" in e for e in found), found

    found = errors(SMOKE, ["sft.datasets.0.split=test_sft"])
    assert any("an official test split" in e for e in found), found

    bad_role = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    write_split(tmp_path / "roles", "train_sft", [bad_role])
    found = errors(SMOKE, [f"sft.datasets.0.path={tmp_path / 'roles'}", "sft.eval=null", "dpo=null"])
    assert any("warning: " in e and "rows will be dropped (unknown role)" in e for e in found), found

    drops = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    found = errors(SMOKE, [f"sft.datasets.0.path={tmp_path / 'ok'}", "sft.eval=null", "dpo=null",
                           f"chat_template={drops}", "sft.assistant_only_loss=false"])
    assert any("do not render" in e and "assistant message does not appear" in e for e in found), found


def test_local_preference_data(tmp_path):
    pair = {"prompt": "q", "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    write_split(tmp_path / "prefs", "train_prefs", [pair])
    found = errors(SMOKE, [f"dpo.datasets.0.path={tmp_path / 'prefs'}", "dpo.eval=null", "sft=null"])
    assert any("dropped (identical chosen and rejected)" in e for e in found), found


# --- launching a GPU config without a GPU ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "engine"),
    [
        ({"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no", "WORLD_SIZE": "2"}, None),
        ({"ACCELERATE_MIXED_PRECISION": "bf16", "WORLD_SIZE": "8"}, "8 GPU processes"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_MIXED_PRECISION": "bf16"}, "DeepSpeed"),
        ({"ACCELERATE_USE_FSDP": "true", "ACCELERATE_MIXED_PRECISION": "bf16"}, "FSDP"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16", "ACCELERATE_USE_CPU": "False", "CUDA_VISIBLE_DEVICES": "0"},
         "a GPU config"),
        ({}, None),
    ],
)
def test_launched_for_gpu(env, engine):
    assert launcher.launched_for_gpu(env) == engine


def test_fsdp_config_on_a_cpu_machine_stops(tmp_path):
    """accelerate runs FSDP only on GPUs (on a CPU it falls back to DDP or to nothing, and exits 0): refused
    before anything is written; the other GPU configs run on the CPU (tests/distributed/)."""
    if launcher.has_nvidia_gpu():
        pytest.skip("this machine has a GPU")
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          "configs/fsdp.yaml", "--num_processes", "1", "-m", "zephyr_train", "sft", str(SMOKE),
                          f"output_dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode != 0
    assert "zephyr-train: error: launched with FSDP (accelerate launch) but this machine has no CUDA GPU, and " \
           "accelerate runs FSDP only on GPUs" in run.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, config, stops", [
    (["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m", "zephyr_train"], None, True),
    (["accelerate", "launch", "--num_processes=4", "train.py"], None, True),
    (["accelerate", "launch", "--config_file", "CONFIG", "-m", "zephyr_train"], "num_processes: 2\n", True),
    (["accelerate", "launch", "--config_file", "CONFIG", "-m", "zephyr_train"], "num_processes: 1\n", False),
    (["accelerate", "launch", "--cpu", "-m", "zephyr_train"], None, False),
    (["bash", "run.sh", "--num_processes", "2"], None, False),  # not started by accelerate
])
def test_a_launch_that_started_fewer_processes_than_asked_stops(tmp_path, argv, config, stops):
    if config:
        (tmp_path / "c.yaml").write_text(config)
        argv = [str(tmp_path / "c.yaml") if arg == "CONFIG" else arg for arg in argv]
    env = {"ACCELERATE_USE_CPU": "True"}  # what accelerate's one-process launcher exports, without WORLD_SIZE
    if not stops:
        launcher.started_as_asked(env, argv)
        return
    with pytest.raises(UserError, match=r"asked for \d processes but started 1"):
        launcher.started_as_asked(env, argv)
    launcher.started_as_asked({**env, "WORLD_SIZE": "2"}, argv)  # torchrun's launch: the process group decides


def test_world_size_that_accelerate_does_not_see_stops():
    """The guard every stage runs before its model loads, in 2 real ranks that accelerate sets up as one (a
    CPU launch with ACCELERATE_USE_CPU=false: each rank would train alone on all the data)."""
    code = "from zephyr_train.preflight import launcher; launcher.process_state({})"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "--no-python", sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env={**os.environ, "ACCELERATE_USE_CPU": "false"})
    assert run.returncode != 0
    assert "UserError: 2 processes were started (WORLD_SIZE=2) but accelerate sees 1" in run.stderr, run.stderr


def test_slurm_example_is_valid_bash_and_uses_the_multi_node_config():
    script = ROOT / "configs" / "slurm_multi_node.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "configs/multi_node.yaml" in text and "--machine_rank" in text and "--main_process_ip" in text


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.parent.name == "zephyr-7b-beta"], ids=lambda p: p.stem)
def test_7b_recipes_run_on_local_curated_data(capsys, recipe):
    """What `zephyr-train data` writes (a directory of {split}.jsonl in the public schemas) plugs in by path."""
    samples = ROOT / "src" / "zephyr_train" / "data" / "sample_files"
    code, out = check(capsys, recipe, f"sft.datasets.0.path={samples / 'ultrachat'}",
                      f"dpo.datasets.0.path={samples / 'ultrafeedback'}")
    assert code == 0, out
    assert out.count("columns ok, first 5 rows render") == 2 and "on the Hub" not in out
