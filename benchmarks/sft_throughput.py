"""SFT throughput: zephyr-train against plain TRL defaults, same model, data and settings, in one run.

Each side trains in its own process (so peak RSS is its own) for one epoch over the same
conversations from the bundled UltraChat-shaped sample (long-tailed lengths), on the built-in
~27M-parameter Mistral, with the same max length, precision (fp32) and optimizer steps per epoch.

    plain TRL: SFTTrainer defaults: no packing, pad to the longest in batch, gradient checkpointing
               on, TRL's fused LM head; bf16 off (TRL's default bf16 on a CPU would not be comparable)
    ours:      `zephyr-train sft` defaults: best-fit packing kept as rows, each example attended on its
               own (SDPA per example), no gradient checkpointing, dense LM head on CPU, assistant-only loss

Printed: epoch wall time, tokens/s (non-padding tokens through forward+backward), padding share,
peak RSS, the ratios, the share of this CPU's fp32 GEMM rate measured in the same run reached
by 6 x parameters x tokens/s, and `check`'s memory estimate for each side's settings.
Usage: python benchmarks/sft_throughput.py [--examples N] [--model NAME]
(`--model builtin:smollm2-135m`: the real SmolLM2-135M-Instruct, each side with the model's own chat template)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import sides

ROOT = Path(__file__).resolve().parents[1]
MODEL = "builtin:tiny-mistral-25m"
MAX_LENGTH = 1024
BATCH = 8  # examples per step for plain TRL; ours packs to the same number of steps per epoch
SEED = 0


def gemm_rate(seconds: float = 3.0) -> float:
    """fp32 matmul FLOP/s on the model's own shapes (4096 tokens x hidden x MLP/vocab widths)."""
    import torch

    best = 0.0
    for k, n in ((512, 1408), (1408, 512), (512, 4096)):
        a, b = torch.randn(4096, k), torch.randn(k, n)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * 4096 * k * n * reps / (time.perf_counter() - start))
    return best


def conversations(n: int):
    from zephyr_train.data.mixture import take_share
    from zephyr_train.stages import load_recipe

    spec = load_recipe(ROOT / "recipes" / "smoke.yaml").stage("sft").datasets[0]
    import datasets

    from zephyr_train.data.builtin import dataset_dir

    ds = datasets.load_dataset("json", data_files=str(dataset_dir(spec.path) / "train_sft.jsonl"), split="train")
    return take_share(ds, n / len(ds), SEED).select_columns(["messages"])


def template_key(model: str) -> str:
    """The smoke recipe's Zephyr template for the benchmark models; a real model keeps its own, as TRL does."""
    return "chat_template=zephyr" if model == MODEL else "chat_template=auto"


def run_ours(n: int, out: Path, model: str = MODEL) -> dict:
    from zephyr_train.data.builtin import model_dir
    from zephyr_train.stages import load_recipe
    from zephyr_train.stages.sft import run_sft

    ds = conversations(n)
    data = out / "data"
    ds.to_json(str(data / "train.jsonl"))
    # rows of MAX_LENGTH per step so that steps per epoch match plain TRL's
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir(model))
    tokens = sum(len(tok(tok.apply_chat_template(m, tokenize=False))["input_ids"]) for m in ds["messages"])
    steps = math.ceil(n / BATCH)
    rows = max(1, round(tokens / (0.97 * MAX_LENGTH) / steps))
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", [
        f"model.name_or_path={model}", template_key(model), "sft.eval=null", "sft.save_strategy=no",
        f"sft.max_length={MAX_LENGTH}",
        f"sft.per_device_train_batch_size={rows}", "sft.num_train_epochs=1", "sft.logging_steps=1000",
        "sft.learning_rate=1e-4", f"output_dir={out / 'run'}", "sft.disable_tqdm=true", f"sft.seed={SEED}"])
    recipe.stage("sft").datasets[0].path, recipe.stage("sft").datasets[0].split = str(data / "train.jsonl"), "train"
    s = run_sft(recipe, overwrite=True)
    # check's estimate for each side's settings: ours (packed rows, no checkpointing), TRL's (8 examples, checkpointed)
    estimates = {"ours": sides.estimate_for(recipe, "sft", rows).total,
                 "trl": sides.estimate_for(recipe, "sft", BATCH, checkpointing=True).total}
    return {"seconds": s.train_runtime_s, "tokens": s.tokens_seen, "padding": s.padding_fraction,
            "steps": s.global_step, "batch": f"{rows} packed rows", "estimates": estimates}


def run_trl(n: int, out: Path, model: str = MODEL) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from zephyr_train.data.builtin import model_dir

    path = model_dir(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(output_dir=str(out / "trl"), max_length=MAX_LENGTH, per_device_train_batch_size=BATCH,
                     num_train_epochs=1, learning_rate=1e-4, bf16=False, report_to="none", save_strategy="no",
                     logging_steps=1000, disable_tqdm=True, seed=SEED)
    trainer = SFTTrainer(model=model, args=args, train_dataset=conversations(n), processing_class=tokenizer)
    counts = {"positions": 0, "real": 0}
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        counts["positions"] += batch["input_ids"].numel()
        counts["real"] += int(batch["attention_mask"].sum())
        return batch

    trainer.data_collator = counting
    result = trainer.train()
    return {"seconds": result.metrics["train_runtime"], "tokens": counts["real"],
            "padding": 1 - counts["real"] / counts["positions"], "steps": trainer.state.global_step,
            "batch": f"{BATCH} examples"}


def child(side: str, n: int, model: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_ours if side == "ours" else run_trl)(n, Path(tmp), model)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sides.report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=240)
    parser.add_argument("--child", choices=["ours", "trl"])
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.examples, args.model)

    from zephyr_train.data.builtin import model_dir

    params = sum(v for v in json.loads((model_dir(args.model) / "model.safetensors.index.json").read_text())
                 ["metadata"].values()) if (model_dir(args.model) / "model.safetensors.index.json").exists() else None
    if params is None:
        from safetensors import safe_open

        with safe_open(str(model_dir(args.model) / "model.safetensors"), "pt") as f:
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    rate = gemm_rate()
    results = {name: sides.run(__file__, child, ["--examples", str(args.examples), "--model", args.model])
               for name, child in (("plain TRL", "trl"), ("zephyr-train", "ours"))}
    print(f"\nSFT, one epoch over {args.examples} conversations, {args.model} ({params / 1e6:.1f}M params), "
          f"max_length {MAX_LENGTH}, fp32, {os.cpu_count()} CPUs; fp32 GEMM rate {rate / 1e9:.1f} GFLOP/s")
    header = f"{'':14}{'steps':>6}{'batch':>17}{'epoch s':>9}{'tokens/s':>10}{'padding':>9}{'peak RSS':>10}" \
             f"{'% GEMM':>8}"
    print(header)
    for name, r in results.items():
        tps = r["tokens"] / r["seconds"]
        r["tps"], r["gemm"] = tps, 6 * params * tps / rate
        print(f"{name:14}{r['steps']:>6}{r['batch']:>17}{r['seconds']:>9.1f}{tps:>10.0f}{r['padding']:>9.1%}"
              f"{r['peak_rss_mib']:>8.0f}Mi{r['gemm']:>8.1%}")
    ours, base = results["zephyr-train"], results["plain TRL"]
    print(f"{'ratio':14}{'':23}{ours['seconds'] / base['seconds']:>9.2f}{ours['tps'] / base['tps']:>10.2f}"
          f"{'':9}{ours['peak_rss_mib'] / base['peak_rss_mib']:>10.2f}")
    estimates = ours["estimates"]
    print(f"check's estimate for the same settings (made for GPUs: 1.5 GiB of CUDA overhead, every position's "
          f"logits): plain TRL {estimates['trl'] / 2**30:.1f} GiB, zephyr-train {estimates['ours'] / 2**30:.1f} GiB; "
          f"measured peak RSS {base['peak_rss_mib'] / 1024:.1f} and {ours['peak_rss_mib'] / 1024:.1f} GiB")
    print("speed-up from: packing (no padding), no gradient checkpointing, packed rows kept as rows with each "
          "example attended on its own (SDPA per example), dense LM head on labelled positions instead of TRL's "
          "CPU fallback of the fused head")


if __name__ == "__main__":
    main()
