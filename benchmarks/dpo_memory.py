"""DPO reference model: zephyr-train's LoRA DPO against loading a second full model as the reference.

Same model, pairs and DPOConfig on both sides, each side in its own process (peak RSS is its own):

    two models: what many DPO scripts do: `DPOTrainer(model, ref_model=<second copy>, peft_config=...)`
    ours:       `zephyr-train dpo` with LoRA: no second copy; the reference is the same weights with the
                adapter disabled (and the adapter merged into a full model at the end, after the
                training model is freed)

Then full fine-tuning with `precompute_ref_log_probs` off (a frozen copy held during training) and
on (reference log-probs computed once before training, no copy held). Printed: peak RSS, memory
above the process's own baseline after imports (what the models and training take), seconds per
optimizer step, wall time of the whole stage, and the ratios. Activation checkpointing is on for every
side, as in the public 7B DPO recipes, so that weights, not activations, dominate memory as they do
at 7B.
Usage: python benchmarks/dpo_memory.py [--pairs N] [--model builtin:...]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import sides

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["dpo.max_length=192", "dpo.per_device_train_batch_size=1", "dpo.gradient_accumulation_steps=1",
            "dpo.num_train_epochs=1", "dpo.learning_rate=5e-5", "dpo.logging_steps=1000", "dpo.eval=null",
            "dpo.save_strategy=no", "dpo.disable_tqdm=true", "dpo.seed=0",
            "dpo.activation_checkpointing=true"]  # as the public 7B DPO recipes: weights dominate memory
LORA = ["dpo.lora.r=16", "dpo.lora.alpha=32"]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recipe_for(model: str, data: Path, out: Path, extra: list[str]):
    from zephyr_train.stages import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml",
                         [f"model.name_or_path={model}", f"output_dir={out}", *SETTINGS, *extra])
    recipe.sections.pop("sft", None)  # DPO straight from the model: both sides start from the same weights
    recipe.stage("dpo").datasets[0].path, recipe.stage("dpo").datasets[0].split = str(data), "train"
    return recipe


def run_ours(model: str, data: Path, out: Path, extra: list[str]) -> dict:
    from zephyr_train.stages.dpo import run_dpo

    s = run_dpo(recipe_for(model, data, out, extra), overwrite=True)
    return {"steps": s.global_step, "train_s": s.train_runtime_s}


def run_two_models(model: str, data: Path, out: Path, extra: list[str]) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from zephyr_train.data.mixture import clean_preferences
    from zephyr_train.inference import modeling

    recipe = recipe_for(model, data, out, extra)
    path = modeling.model_location(recipe.model, "bench")
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # The second full copy. Loaded from a copy of the files: two mmaps of one safetensors file share their
    # pages on a CPU, which would hide the copy that a GPU (or any non-mmap load) really holds.
    shutil.copytree(path, out / "reference")
    reference = AutoModelForCausalLM.from_pretrained(out / "reference", dtype=torch.float32)
    pairs, _ = clean_preferences(datasets.load_dataset("json", data_files=str(data), split="train"))
    lora = recipe.stage("dpo").lora
    trainer = DPOTrainer(model=policy, ref_model=reference, train_dataset=pairs, processing_class=tokenizer,
                         args=DPOConfig(output_dir=str(out / "trl"), **recipe.stage("dpo").trainer),
                         peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    result = trainer.train()
    return {"steps": trainer.state.global_step, "train_s": result.metrics["train_runtime"]}


SIDES = {
    "lora, two models": (run_two_models, LORA),
    "lora, ours": (run_ours, LORA),
    "full, ref copy": (run_ours, ["dpo.precompute_ref_log_probs=false"]),
    "full, precomputed": (run_ours, ["dpo.precompute_ref_log_probs=true"]),
}


def child(name: str, model: str, pairs: int) -> None:
    import torch  # noqa: F401  (the baseline: libraries loaded, no model yet)
    import trl  # noqa: F401

    from zephyr_train.data.builtin import dataset_dir

    baseline = rss_mib()
    runner, extra = SIDES[name]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        rows = (dataset_dir("builtin:ultrafeedback-sample") / "train_prefs.jsonl").read_text().splitlines()
        data.write_text("\n".join(rows[:pairs]) + "\n")
        start = time.perf_counter()
        result = runner(model, data, Path(tmp) / "out", extra)
        result["wall_s"] = time.perf_counter() - start
    result.update(peak_rss_mib=rss_mib(), baseline_mib=baseline)
    sides.report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--model", default="builtin:tiny-mistral-100m")
    parser.add_argument("--child", choices=list(SIDES))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.model, args.pairs)

    from zephyr_train.data.builtin import model_dir

    model_dir(args.model)  # build once, outside the timed sides
    results = {name: sides.run(__file__, name, ["--model", args.model, "--pairs", str(args.pairs)],
                               env={"TQDM_DISABLE": "1"}) for name in SIDES}
    print(f"\nDPO, {args.pairs} pairs, batch 1, max_length 192, fp32, {args.model}, {os.cpu_count()} CPUs")
    print(f"{'':20}{'steps':>6}{'s/step':>8}{'stage s':>9}{'peak RSS':>10}{'above baseline':>16}")
    for name, r in results.items():
        r["step_s"], r["above"] = r["train_s"] / r["steps"], r["peak_rss_mib"] - r["baseline_mib"]
        print(f"{name:20}{r['steps']:>6}{r['step_s']:>8.2f}{r['wall_s']:>9.1f}{r['peak_rss_mib']:>8.0f}Mi"
              f"{r['above']:>14.0f}Mi")
    for ours, base in (("lora, ours", "lora, two models"), ("full, precomputed", "full, ref copy")):
        o, b = results[ours], results[base]
        print(f"{ours} / {base}: peak RSS {o['peak_rss_mib'] / b['peak_rss_mib']:.2f}x, above baseline "
              f"{o['above'] / b['above']:.2f}x, s/step {o['step_s'] / b['step_s']:.2f}x, "
              f"stage wall {o['wall_s'] / b['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
