"""benchmarks/gpu_evidence.py: its arithmetic on small inputs, and its --tiny mode end to end, so the script that
will run on a lent GPU keeps working as the package changes. No GPU here: the CUDA memory fields are checked to
be absent on the CPU, present-or-absent consistently with `status`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import evidence_build as build  # noqa: E402
import evidence_figures as figures  # noqa: E402
import evidence_runs as runs  # noqa: E402
import gpu_evidence  # noqa: E402

from zephyr_train.data import mixture  # noqa: E402
from zephyr_train.preflight.architectures import MISTRAL_7B  # noqa: E402


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12),
    ("Tesla T4", None)])
def test_gpu_peak_is_the_bf16_dense_datasheet_figure(name, peak):
    found = figures.gpu_peak(name)
    assert (found and found["flops"]) == peak
    if found:
        assert "bf16 dense" in found["name"]


def test_model_flops_per_token_for_mistral_7b():
    # 6 x (7.24B - 131M input embedding) for full fine-tuning, attention at 1,000 tokens adds ~2%
    matmul = MISTRAL_7B.params - 32000 * 4096 - 65 * 4096
    full = figures.flops_per_token(MISTRAL_7B, 0, "sft", None, reference_forward=False)
    assert full == 6 * matmul
    with_attention = figures.flops_per_token(MISTRAL_7B, 1000, "sft", None, reference_forward=False)
    assert with_attention - full == 3 * 2 * 32 * 4096 * 1000
    lora = figures.flops_per_token(MISTRAL_7B, 0, "sft", 40_000_000, reference_forward=False)
    assert lora == 4 * matmul + 6 * 40_000_000  # frozen base: no weight gradients
    dpo = figures.flops_per_token(MISTRAL_7B, 0, "dpo", 40_000_000, reference_forward=True)
    assert dpo == lora + 2 * matmul  # the reference's forward
    assert figures.mfu(1000.0, full, {"flops": 989e12}) == pytest.approx(1000 * full / 989e12)
    assert figures.mfu(None, full, {"flops": 989e12}) is None and figures.ratio(2.0, None) is None


def test_throughput_leaves_out_the_first_step():
    points = [[1, 1000, 10.0, 2.0], [2, 3000, 11.0, 1.9], [3, 5000, 12.0, 1.8]]
    assert runs.throughput(points, 0.0, 12.5) == (2000.0, 2.0, 4000)
    assert runs.throughput(points[:1], 9.0, 10.0) == (1000.0, 1.0, 1000)  # one step: the whole run


def test_full_sft_batch_is_the_largest_the_estimate_fits():
    run = next(r for r in runs.all_runs() if r.method == "full")
    overrides = runs.overrides_for(run, ROOT / "recipes", ROOT, ROOT / "out", 2, "sdpa", tiny=False)
    overrides[0] = "model.name_or_path=mistralai/Mistral-7B-v0.1"  # shipped architecture, nothing on disk
    memory_bytes = 141 * gpu_evidence.GIB
    batch, total = gpu_evidence.largest_batch(run, overrides, memory_bytes, 64)
    recipe = runs.load(run, overrides)
    assert 1 < batch < 64 and total <= gpu_evidence.FIT_SHARE * memory_bytes
    assert gpu_evidence.sides.estimate_for(recipe, "sft", batch + 1).total > gpu_evidence.FIT_SHARE * memory_bytes


def test_a_key_the_recipe_schema_does_not_know_skips_the_run_with_its_reason():
    run = runs.Run("x", "lora.yaml", "dpo", "lora", overrides=["dpo.no_such_key=1"])
    reason = runs.skip_reason(run, runs.overrides_for(run, ROOT, ROOT, ROOT, 2, "sdpa", tiny=True))
    assert reason and "dpo.no_such_key" in reason
    plain = runs.Run("y", "lora.yaml", "dpo", "lora")
    assert runs.skip_reason(plain, runs.overrides_for(plain, ROOT, ROOT, ROOT, 2, "sdpa", tiny=True)) is None


def test_synthetic_rows_are_valid_and_long_tailed():
    rows = build.conversations(200, 1.0)
    assert all(mixture.conversation_problem(r["messages"]) is None for r in rows)
    words = sorted(sum(len(m["content"].split()) for m in r["messages"]) for r in rows)
    assert words[-1] > 3 * words[len(words) // 2]  # a long tail, as in ultrachat_200k
    pairs = build.preference_pairs(50, 0.125)
    assert all(mixture.preference_problem(p) is None for p in pairs)
    assert build.conversations(3, 1.0) == build.conversations(3, 1.0)  # seeded


@pytest.mark.slow
def test_tiny_mode_writes_a_json_per_run_and_the_table(tmp_path):
    """The whole --tiny code path on a subset: QLoRA SFT (4-bit), LoRA DPO, full SFT (batch search). (The DPO
    head variants are the LoRA DPO run with one key changed; `--tiny` without `--only` runs them.)"""
    only = ["qlora-sft", "lora-dpo", "full-sft"]
    done = subprocess.run([sys.executable, "benchmarks/gpu_evidence.py", "--tiny", "--steps", "2", "--budget", "600",
                           "--out", str(tmp_path), "--only", ",".join(only)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in only}
    for name in ["qlora-sft", "lora-dpo", "full-sft"]:
        r = results[name]
        assert r["status"] == "ok", (name, r["reason"], (tmp_path / "logs" / f"{name}.log").read_text()[-3000:])
        assert r["global_step"] == 2 and len(r["losses"]) == 2
        assert r["tokens_per_second"] > 0 and r["measured_tokens"] > 0
        # real tokens of step 2 only: at most the step's rows x max_length (DPO: chosen and rejected)
        rows = r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * (2 if r["stage"] == "dpo" else 1)
        assert r["measured_tokens"] <= rows * r["max_length"]
        # (no upper bound: on a busy CPU the peak probe can run slower than the training steps did)
        assert r["mfu"] > 0 and "measured on this CPU" in r["peak"]["name"]
        assert r["estimate_gib"] > 0 and set(r["estimate_parts_gib"]) >= {"weights", "activations"}
        assert r["max_memory_allocated_gib"] is None and r["estimate_ratio"] is None  # no CUDA here
        assert r["device"] == "cpu" and r["attn_implementation"] == "sdpa"
    assert results["qlora-sft"]["quantization"] == "nf4" and results["qlora-sft"]["trained_params"] > 0
    assert results["lora-dpo"]["lora_r"] == 128 and results["lora-dpo"]["stage"] == "dpo"
    full = results["full-sft"]
    assert full["trained_params"] is None and 1 <= full["per_device_train_batch_size"] <= 8
    table = next(tmp_path.glob("evidence-*.md")).read_text()
    assert all(f"| {name} |" in table for name in only) and "estimate / reserved" in table
    summary = json.loads(next(tmp_path.glob("evidence-*.json")).read_text())
    assert [r["name"] for r in summary["runs"]] == [r.name for r in runs.all_runs() if r.name in only]
    assert "| qlora-sft |" in done.stdout  # the table is printed
