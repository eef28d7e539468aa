"""DPO throughput: zephyr-train against plain TRL defaults, same model, pairs, settings and steps, in one run.

The model is a random-init Mistral of ~25M parameters (hidden 256, 8 layers) carrying Mistral's real
32000-token SentencePiece vocabulary (shipped by the `mistral-common` package), so that the LM head costs
what it costs at 7B relative to a layer. The pairs are the bundled UltraFeedback-shaped sample (long-tailed
lengths), batch 8 pairs, max_length 1024, fp32, full fine-tuning, the same optimizer steps on both sides,
each side in its own process (peak RSS is its own):

    plain TRL: `DPOTrainer` defaults: padded batches, TRL's fused LM head (its torch fallback without
               Triton, over every position), activation checkpointing on, a frozen reference copy
    ours:      `zephyr-train dpo` defaults: packed pairs, completion-only LM head (`dpo.lm_head: auto`),
               reference log-probs precomputed once (the whole split is trained), no checkpointing,
               plus the held-out figures before and after training on 16 pairs, timed apart

Printed: seconds (ours: reference precompute + training), trained completion tokens/s, padding share of
the positions the model computed, peak RSS, the ratios, the share of the fp32 GEMM rate measured in
this run reached by 6 x params x policy tokens + 2 x params x reference tokens, and `check`'s memory
estimate for each side's settings. A third side, `zephyr-train sft` on the same pairs (each chosen and each
rejected conversation an SFT example, packed, the same optimizer steps), gives SFT's tokens/s on the same
model and tokens: DPO's trained tokens/s (prompt + answer of both sequences, as TRL counts them) against it.
Usage: python benchmarks/dpo_throughput.py [--steps N] [--model NAME]
(`--model builtin:smollm2-135m`: the real SmolLM2-135M-Instruct and its 49152-token vocabulary, with its own
chat template on both sides, instead of the benchmark model)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import sides

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH, BATCH, EVAL_PAIRS, SEED = 1024, 8, 16, 0
DIMS = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 4,
        "num_key_value_heads": 2}


def model_dir() -> Path:
    """The benchmark model, built once (seeded) next to the built-in models' cache."""
    import shutil

    import mistral_common
    import torch
    from transformers import LlamaTokenizer, MistralConfig, MistralForCausalLM

    from zephyr_train.data import builtin
    from zephyr_train.data.chat_template import ZEPHYR

    target = builtin.cache_root() / "bench-mistral-25m-vocab32000"
    if (target / "config.json").exists():
        return target
    tmp = Path(tempfile.mkdtemp(dir=builtin.cache_root()))
    shutil.copy(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1", tmp / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(tmp)
    tokenizer.pad_token, tokenizer.chat_template = tokenizer.eos_token, ZEPHYR
    torch.manual_seed(SEED)
    model = MistralForCausalLM(MistralConfig(**DIMS, vocab_size=len(tokenizer), tie_word_embeddings=False,
                                             bos_token_id=1, eos_token_id=2, pad_token_id=2))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tokenizer.model").unlink()
    tmp.rename(target)
    return target


def write_pairs(folder: Path, n: int) -> None:
    """Pairs with long-tailed lengths, as UltraFeedback's: the bundled sample's rows are short (<= ~170 tokens
    with this tokenizer), so each pair here joins k of them (prompts into one prompt, answers into each
    answer), k log-normal with median 3, capped at 12: ~100 to over 1024 tokens a sequence, seeded."""
    import random

    from zephyr_train.data.builtin import dataset_dir

    source, rng = dataset_dir("builtin:ultrafeedback-sample"), random.Random(SEED)
    folder.mkdir(parents=True)
    for split, count in (("train_prefs", n), ("test_prefs", EVAL_PAIRS)):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
        pairs = []
        for _ in range(count):
            group = rng.sample(rows, min(12, max(1, round(rng.lognormvariate(1.1, 0.8)))))
            def join(key: str, turn: int, group: list = group) -> str:
                return "\n\n".join(r[key][turn]["content"] for r in group)
            prompt = [{"role": "user", "content": join("chosen", -2)}]
            pairs.append({"chosen": prompt + [{"role": "assistant", "content": join("chosen", -1)}],
                          "rejected": prompt + [{"role": "assistant", "content": join("rejected", -1)}]})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))


def token_counts(trainer) -> dict:
    """Real tokens (prompt + answer, cut to max_length as TRL's collator does) and answer tokens of the train split."""
    real = completion = 0
    for p, c, r in zip(*(trainer.train_dataset[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")), strict=True):
        for answer in (c, r):
            total = min(len(p) + len(answer), MAX_LENGTH)
            real, completion = real + total, completion + max(total - len(p), 0)
    return {"real": real, "completion": completion}


BENCH = "bench"  # --model's default: the seeded 25M-parameter model above


def model_path(model: str) -> Path:
    from zephyr_train.data import builtin

    return model_dir() if model == BENCH else builtin.model_dir(model)


def run_ours(steps: int, data: Path, out: Path, model: str = BENCH) -> dict:
    import trl

    from zephyr_train.stages import dpo, load_recipe
    from zephyr_train.train.patches import dpo_log_probs

    seen, timers = {}, {"held_out": [], "precompute": 0.0}
    train, held_out, precompute = trl.DPOTrainer.train, dpo.held_out, trl.DPOTrainer._precompute_ref_logps

    def timed_train(self, *a, **k):  # instrumentation only: find the trainer, time its parts
        seen["trainer"] = self
        return train(self, *a, **k)

    def timed_held_out(trainer):
        start = time.perf_counter()
        result = held_out(trainer)
        timers["held_out"].append(time.perf_counter() - start)
        return result

    def timed_precompute(self, dataset, name, *a):
        start = time.perf_counter()
        result = precompute(self, dataset, name, *a)
        timers["precompute"] += (time.perf_counter() - start) if name == "train" else 0.0
        return result

    trl.DPOTrainer.train, dpo.held_out, trl.DPOTrainer._precompute_ref_logps = \
        timed_train, timed_held_out, timed_precompute
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", [
        f"model.name_or_path={model_path(model)}", "chat_template=" + ("zephyr" if model == BENCH else "auto"),
        f"output_dir={out}", f"dpo.max_length={MAX_LENGTH}",
        f"dpo.per_device_train_batch_size={BATCH}", f"dpo.per_device_eval_batch_size={BATCH}",
        f"dpo.max_steps={steps}", "dpo.logging_steps=1000", "dpo.save_strategy=no", "dpo.disable_tqdm=true",
        f"dpo.seed={SEED}", f"dpo.eval.max_samples={EVAL_PAIRS}"])
    recipe.sections.pop("sft", None)
    recipe.stage("dpo").datasets[0].path = str(data)
    estimates = {"ours": sides.estimate_for(recipe, "dpo").total,
                 "trl": sides.estimate_for(recipe, "dpo", checkpointing=True).total}
    s = dpo.run_dpo(recipe, overwrite=True)
    trainer = seen["trainer"]
    return {"seconds": s.train_runtime_s + timers["precompute"], "train_s": s.train_runtime_s,
            "precompute_s": timers["precompute"], "held_out_s": timers["held_out"], "steps": s.global_step,
            "padding": dpo_log_probs.padding_fraction(trainer.model), "head": s.lm_head,
            "first_loss": s.train_loss_first, "estimates": estimates, **token_counts(trainer)}


def run_sft_same_pairs(steps: int, data: Path, out: Path, model: str = BENCH) -> dict:
    """`zephyr-train sft` on the pairs' chosen and rejected conversations: SFT's tokens/s on DPO's tokens."""
    import datasets

    from zephyr_train.stages import load_recipe
    from zephyr_train.stages.sft import run_sft

    rows = [json.loads(line) for line in (data / "train_prefs.jsonl").read_text().splitlines()]
    folder = out / "sft-data"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"messages": r[side]}) + "\n"
                                                for r in rows for side in ("chosen", "rejected")))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(model))
    if model == BENCH:
        from zephyr_train.data.chat_template import ZEPHYR

        tokenizer.chat_template = ZEPHYR
    conversations = datasets.load_dataset("json", data_files=str(folder / "train.jsonl"), split="train")
    tokens = sum(min(len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=False)), MAX_LENGTH)
                 for m in conversations["messages"])
    per_step = max(1, round(tokens / (0.97 * MAX_LENGTH) / steps))  # packed rows, the same optimizer steps
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", [
        f"model.name_or_path={model_path(model)}", "chat_template=" + ("zephyr" if model == BENCH else "auto"),
        f"output_dir={out / 'run'}", "sft.eval=null", "sft.save_strategy=no", f"sft.max_length={MAX_LENGTH}",
        f"sft.per_device_train_batch_size={per_step}", "sft.num_train_epochs=1", "sft.logging_steps=1000",
        "sft.disable_tqdm=true", f"sft.seed={SEED}"])
    recipe.sections.pop("dpo", None)
    recipe.stage("sft").datasets[0].path, recipe.stage("sft").datasets[0].split = str(folder / "train.jsonl"), "train"
    s = run_sft(recipe, overwrite=True)
    return {"seconds": s.train_runtime_s, "train_s": s.train_runtime_s, "steps": s.global_step,
            "real": s.tokens_seen, "padding": s.padding_fraction}


def run_trl(steps: int, data: Path, out: Path, model: str = BENCH) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from zephyr_train.data.mixture import clean_preferences

    path = model_path(model)
    pairs, _ = clean_preferences(datasets.load_dataset("json", data_files=str(data / "train_prefs.jsonl"),
                                                       split="train"))
    args = DPOConfig(output_dir=str(out), max_length=MAX_LENGTH, per_device_train_batch_size=BATCH, max_steps=steps,
                     learning_rate=5e-5, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
                     disable_tqdm=True, seed=SEED)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
                         train_dataset=pairs, processing_class=AutoTokenizer.from_pretrained(path))
    counts, collate = {"positions": 0, "real": 0}, trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        counts["positions"] += batch["input_ids"].numel()
        counts["real"] += int(batch["attention_mask"].sum())
        return batch

    trainer.data_collator = counting
    result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"seconds": result.metrics["train_runtime"], "train_s": result.metrics["train_runtime"],
            "steps": trainer.state.global_step, "padding": 1 - counts["real"] / counts["positions"],
            "head": "TRL fused", "first_loss": losses[0] if losses else None, **token_counts(trainer)}


def child(side: str, steps: int, model: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_pairs(Path(tmp) / "pairs", steps * BATCH)
        run = {"ours": run_ours, "trl": run_trl, "sft": run_sft_same_pairs}[side]
        result = run(steps, Path(tmp) / "pairs", Path(tmp) / "out", model)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sides.report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", choices=["ours", "trl", "sft"])
    parser.add_argument("--model", default=BENCH)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.model)

    import torch
    from safetensors import safe_open
    from sft_throughput import gemm_rate

    path = model_path(args.model)  # built once, outside the timed sides
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        params = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
    rate = gemm_rate()
    results = {name: sides.run(__file__, child, ["--steps", str(args.steps), "--model", args.model],
                                 env={"TQDM_DISABLE": "1"})
               for name, child in (("plain TRL", "trl"), ("zephyr-train", "ours"))}
    sft = sides.run(__file__, "sft", ["--steps", str(args.steps), "--model", args.model], env={"TQDM_DISABLE": "1"})
    model = "Mistral" if args.model == BENCH else args.model
    print(f"\nDPO, {args.steps} steps x {BATCH} pairs, max_length {MAX_LENGTH}, fp32, full fine-tuning, {model} "
          f"{params / 1e6:.1f}M params, {os.cpu_count()} CPUs; fp32 GEMM rate "
          f"{rate / 1e9:.1f} GFLOP/s")
    print(f"{'':14}{'head':>11}{'seconds':>9}{'s/step':>8}{'answer tok/s':>14}{'padding':>9}{'peak RSS':>10}"
          f"{'% GEMM':>8}{'loss 1':>8}")
    for name, r in results.items():
        r["tps"] = r["completion"] / r["seconds"]
        r["gemm"] = 8 * params * r["real"] / r["seconds"] / rate  # 6 x policy tokens + 2 x reference tokens
        print(f"{name:14}{r['head']:>11}{r['seconds']:>9.1f}{r['train_s'] / r['steps']:>8.2f}{r['tps']:>14.0f}"
              f"{r['padding']:>9.1%}{r['peak_rss_mib']:>8.0f}Mi{r['gemm']:>8.1%}{r['first_loss']:>8.4f}")
    ours, base = results["zephyr-train"], results["plain TRL"]
    print(f"{'ratio':14}{'':11}{ours['seconds'] / base['seconds']:>9.2f}{'':8}{ours['tps'] / base['tps']:>14.2f}"
          f"{'':9}{ours['peak_rss_mib'] / base['peak_rss_mib']:>10.2f}")
    step = ours["train_s"] / ours["steps"]
    batches = -(-EVAL_PAIRS // BATCH)
    print(f"ours: reference precompute {ours['precompute_s']:.1f}s (once, {ours['steps'] * BATCH} pairs); held-out "
          f"figures on {EVAL_PAIRS} pairs " + ", ".join(f"{s / batches:.2f}s" for s in ours["held_out_s"])
          + f" per eval batch (before, after) against {step:.2f}s per training step")
    sft_tps = sft["real"] / sft["seconds"]
    print(f"DPO against SFT on the same model and tokens (zephyr-train sft on the {ours['steps'] * BATCH} pairs' "
          f"chosen and rejected conversations, {sft['steps']} steps): SFT {sft_tps:.0f} tokens/s; DPO "
          f"{ours['real'] / ours['train_s']:.0f} trained tokens/s with the reference precomputed "
          f"({ours['real'] / ours['train_s'] / sft_tps:.2f}x SFT's), {ours['real'] / ours['seconds']:.0f} with the "
          f"precompute counted ({ours['real'] / ours['seconds'] / sft_tps:.2f}x)")
    estimates = ours["estimates"]
    print(f"check's estimate for the same settings (made for GPUs: 1.5 GiB of CUDA overhead, every position's "
          f"logits): plain TRL (checkpointed) {estimates['trl'] / 2**30:.1f} GiB, zephyr-train "
          f"{estimates['ours'] / 2**30:.1f} GiB; measured peak RSS {base['peak_rss_mib'] / 1024:.1f} and "
          f"{ours['peak_rss_mib'] / 1024:.1f} GiB")
    print(json.dumps({"dpo_throughput": {**results, "zephyr-train sft, same pairs": sft}}))


if __name__ == "__main__":
    main()
