"""Architecture facts for the common bases, local config.json read, and what changes the memory estimate."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOKE
from zephyr_train.preflight import architectures as arch_mod
from zephyr_train.preflight import launcher, memory
from zephyr_train.preflight.architectures import KNOWN, architecture_of, from_config
from zephyr_train.stages import load_recipe

NONE = launcher.Launch("<none>")


@pytest.mark.parametrize(
    ("name", "published"),
    [  # parameter counts on the model cards / safetensors metadata
        ("mistralai/Mistral-7B-v0.1", 7.24e9),
        ("meta-llama/Meta-Llama-3-8B", 8.03e9),
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03e9),
        ("Qwen/Qwen2.5-7B", 7.62e9),  # 7.61B here: q/k/v biases (0.2M) are not counted
        ("Qwen/Qwen2.5-0.5B", 0.494e9),
        ("google/gemma-2-9b", 9.24e9),
        ("microsoft/Phi-3-mini-4k-instruct", 3.82e9),
        ("mistralai/Mixtral-8x7B-v0.1", 46.7e9),
    ],
)
def test_shipped_bases_match_published_sizes(name, published):
    assert KNOWN[name].params == pytest.approx(published, rel=0.005)


def test_local_config_json_is_read(tmp_path):
    """A Gemma-2-like config without tie_word_embeddings: Gemma's config class ties them by default."""
    config = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
              "max_position_embeddings": 8192}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert architecture_of(str(tmp_path)) == arch_mod.GEMMA2_9B
    untied = from_config({**config, "model_type": "llama"})
    assert untied.embedding_params == 2 * arch_mod.GEMMA2_9B.embedding_params  # LM head counted apart


def test_gqa_and_head_dim_shape_the_projections():
    gemma, phi = arch_mod.GEMMA2_9B.linear_shapes(), arch_mod.PHI3_MINI.linear_shapes()
    assert gemma["q_proj"] == (3584, 16 * 256) and gemma["k_proj"] == (3584, 8 * 256)  # head_dim 256, 8 KV heads
    assert set(phi) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}  # Phi-3's fused projections
    assert phi["qkv_proj"] == (3072, 3 * 3072) and phi["gate_up_proj"] == (3072, 2 * 8192)


def test_moe_experts_from_config_json():
    """Mixtral (num_local_experts) and Qwen-MoE (num_experts, moe_intermediate_size, shared expert)."""
    mixtral = from_config({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                           "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                           "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
                           "num_experts_per_tok": 2})
    assert mixtral == arch_mod.MIXTRAL_8X7B and mixtral.active_intermediate == 2 * 14336
    qwen_moe = from_config({"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
                            "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
                            "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24,
                            "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 151936,
                            "max_position_embeddings": 8192})
    assert qwen_moe.params == pytest.approx(14.3e9, rel=0.01)  # Qwen1.5-MoE-A2.7B: 14.3B in all
    assert qwen_moe.active_intermediate == 4 * 1408 + 5632


def test_vocab_and_experts_move_the_estimate():
    recipe = load_recipe(SMOKE, ["model.dtype=bfloat16", "sft.max_length=2048", "sft.per_device_train_batch_size=1",
                                 "sft.lora.r=16"])
    mistral = memory.estimate(arch_mod.MISTRAL_7B, recipe, "sft", NONE, 1)
    llama = memory.estimate(arch_mod.LLAMA_3_8B, recipe, "sft", NONE, 1)
    mixtral = memory.estimate(arch_mod.MIXTRAL_8X7B, recipe, "sft", NONE, 1)
    assert llama.parts["logits"] / mistral.parts["logits"] == pytest.approx(128256 / 32000)
    assert mixtral.parts["weights"] / mistral.parts["weights"] == pytest.approx(46.7 / 7.24, rel=0.01)
    assert mixtral.parts["activations"] > mistral.parts["activations"]  # two experts per token
    assert mixtral.parts["LoRA adapters"] > 4 * mistral.parts["LoRA adapters"]  # every expert's MLP adapted


def test_lora_params_count_dora_and_layers():
    plain = load_recipe(SMOKE, ["sft.lora.r=8"]).stage("sft").lora
    dora = load_recipe(SMOKE, ["sft.lora.r=8", "sft.lora.use_dora=true"]).stage("sft").lora
    half = load_recipe(SMOKE, ["sft.lora.r=8", "sft.lora.layers_to_transform=[0, 1, 2, 3, 4, 5, 6, 7]"])
    half = half.stage("sft").lora
    base = memory.lora_params(arch_mod.MISTRAL_7B, plain)
    assert base == 32 * 8 * sum(a + b for a, b in arch_mod.MISTRAL_7B.linear_shapes().values())
    magnitudes = 32 * sum(out for _, out in arch_mod.MISTRAL_7B.linear_shapes().values())
    assert memory.lora_params(arch_mod.MISTRAL_7B, dora) == base + magnitudes
    assert memory.lora_params(arch_mod.MISTRAL_7B, half) == base // 4


def test_check_estimates_a_qwen_base_offline(capsys):
    from zephyr_train.cli import main

    code = main(["check", str(SMOKE), "model.name_or_path=Qwen/Qwen2.5-0.5B", "chat_template=qwen2_5",
                 "model.dtype=bfloat16", "--gpus", "1", "--gpu-memory", "80"])
    out = capsys.readouterr().out
    assert "Qwen/Qwen2.5-0.5B: 494.0M parameters (shipped), context 32768" in out
    assert "estimate skipped" not in out and code in (0, None)
    # Qwen's 152k vocabulary: the logits of 8 x 2048 tokens outweigh the 0.5B model's weights many times
    sft_memory = next(line for line in out.splitlines() if line.strip().startswith("memory ("))
    assert "weights 0.9" in sft_memory and "logits 8.1" in sft_memory


def test_lora_targets_checked_against_the_architecture(capsys):
    from zephyr_train.cli import main
    from zephyr_train.preflight.architectures import lora_target_problem

    mistral_names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert lora_target_problem(arch_mod.MISTRAL_7B, mistral_names, "sft.lora") is None
    assert lora_target_problem(arch_mod.PHI3_MINI, ["qkv_proj", "o_proj"], "sft.lora") is None
    assert lora_target_problem(arch_mod.PHI3_MINI, "all-linear", "sft.lora") is None
    assert lora_target_problem(arch_mod.PHI3_MINI, r".*\.(qkv|o)_proj", "sft.lora") is None  # a regex: PEFT's
    assert "match no projection" in lora_target_problem(arch_mod.MISTRAL_7B, ["c_attn"], "sft.lora")
    code = main(["check", "recipes/zephyr-7b-beta/qlora.yaml", "model.name_or_path=microsoft/Phi-3-mini-4k-instruct"])
    out = capsys.readouterr()
    assert code == 2
    assert "sft.lora.target_modules names q_proj, k_proj, v_proj, gate_proj, up_proj, which phi3" in out.out + out.err
