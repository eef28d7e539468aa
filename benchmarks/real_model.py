"""Fidelity on a real model: SFT then DPO on SmolLM2-135M-Instruct, and the paper's ablation at this scale.

Zephyr's paper compares SFT only, SFT + DPO and DPO only (its Table 3). This runs the same three on the real
`builtin:smollm2-135m` (recipes/smollm2-135m/cpu.yaml: config_smol.yaml's learning rates, beta and schedule,
steps and lengths cut for a CPU) through `zephyr-train`, then scores the base model and each result on the
same held-out UltraFeedback-shaped pairs (the bundled `test_prefs` split):

    preference accuracy   share of pairs whose implicit reward beta * (log pi/pi_base) favours chosen over
                          rejected, ties counting half (the base model itself scores 0.5 by construction)
    reward margin         the mean of that reward difference
    log-prob chosen / rejected
                          mean summed log-probability of each completion (DPO's known failure: both fall)
    answer length         mean greedy answer length in tokens on the pairs' prompts (DPO's known drift:
                          longer answers)

Every model is scored against the same reference (the base model), so the rows compare. The DPO stages'
own held-out figures (against their own reference: the SFT model, or the base for DPO only) are printed
too, before and after, from their summary.json; so is the wall time of each stage.

Usage: python benchmarks/real_model.py [--steps N] [--pairs N] [--out DIR]   (about 15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smollm2-135m" / "cpu.yaml"
MAX_NEW_TOKENS = 160


def train(out: Path, steps: int, extra: list[str]) -> dict[str, dict]:
    """`zephyr-train run` of the recipe with STEPS steps per stage; each stage's summary.json."""
    args = [f"output_dir={out}", f"sft.max_steps={steps}", f"dpo.max_steps={steps}", *extra]
    done = subprocess.run([sys.executable, "-m", "zephyr_train", "run", str(RECIPE), "--force", *args],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"training failed ({' '.join(args)}):\n{done.stderr[-4000:]}")
    return {stage: json.loads((out / stage / "summary.json").read_text())
            for stage in ("sft", "dpo") if (out / stage / "summary.json").exists()}


def held_out_pairs(count: int) -> list[dict]:
    from zephyr_train.data import builtin

    lines = (builtin.dataset_dir("builtin:ultrafeedback-sample") / "test_prefs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


def completion_log_probs(model, tokenizer, pair: dict) -> tuple[float, float]:  # noqa: ANN001
    """Summed log-probability of the chosen and the rejected reply after the prompt, as the model's own
    template renders them (the template is prefix-consistent, so the prompt's tokens start the full row)."""
    import torch

    scores = []
    for side in ("chosen", "rejected"):
        messages = pair[side]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        ids = torch.tensor([full])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        log_probs = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        scores.append(float(log_probs[len(prompt) - 1:].sum()))
    return scores[0], scores[1]


def answer_length(model, tokenizer, pair: dict) -> int:  # noqa: ANN001
    import torch

    prompt = tokenizer.apply_chat_template(pair["chosen"][:-1], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return int(out.shape[1] - prompt["input_ids"].shape[1])


def score(model_dir: Path, pairs: list[dict]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    log_probs = [completion_log_probs(model, tokenizer, pair) for pair in pairs]
    lengths = [answer_length(model, tokenizer, pair) for pair in pairs[:8]]
    return {"log_probs": log_probs, "answer_tokens": sum(lengths) / len(lengths)}


def table_row(name: str, scored: dict, base: dict, beta: float) -> dict:
    margins = [beta * ((c - bc) - (r - br)) for (c, r), (bc, br) in zip(scored["log_probs"], base["log_probs"],
                                                                         strict=True)]
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    chosen = [c for c, _ in scored["log_probs"]]
    rejected = [r for _, r in scored["log_probs"]]
    return {"model": name, "accuracy": wins / len(margins), "margin": sum(margins) / len(margins),
            "logp_chosen": sum(chosen) / len(chosen), "logp_rejected": sum(rejected) / len(rejected),
            "answer_tokens": scored["answer_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage")
    parser.add_argument("--pairs", type=int, default=32, help="held-out pairs scored")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-real-model")
    args = parser.parse_args()
    from zephyr_train.data import builtin
    from zephyr_train.stages import load_recipe

    beta = float(load_recipe(RECIPE).stage("dpo").trainer["beta"])
    started = time.perf_counter()
    full = train(args.out / "sft-dpo", args.steps, [f"dpo.eval.max_samples={args.pairs}"])
    dpo_only = train(args.out / "dpo-only", args.steps, ["sft=null", f"dpo.eval.max_samples={args.pairs}"])
    pairs = held_out_pairs(args.pairs)
    base = score(builtin.model_dir("builtin:smollm2-135m"), pairs)
    models = [("base (SmolLM2-135M-Instruct)", base), ("SFT only", score(args.out / "sft-dpo" / "sft", pairs)),
              ("SFT + DPO", score(args.out / "sft-dpo" / "dpo", pairs)),
              ("DPO only", score(args.out / "dpo-only" / "dpo", pairs))]
    rows = [table_row(name, scored, base, beta) for name, scored in models]
    stages = {"SFT": full["sft"], "DPO after SFT": full["dpo"], "DPO only": dpo_only["dpo"]}
    result = {"steps": args.steps, "pairs": args.pairs, "beta": beta, "rows": rows,
              "stage_wall_s": {name: s["wall_time_s"] for name, s in stages.items()},
              "dpo_held_out": {name: {"before": s.get("held_out_before"), "after": s.get("held_out_after")}
                               for name, s in stages.items() if name != "SFT"},
              "total_s": time.perf_counter() - started}
    print(f"\n{args.pairs} held-out pairs, {args.steps} steps per stage, beta {beta}; rewards against the base model")
    print(f"{'model':30} {'pref. acc':>9} {'margin':>8} {'logp chosen':>12} {'logp rejected':>14} {'answer tok':>10}")
    for row in rows:
        print(f"{row['model']:30} {row['accuracy']:9.3f} {row['margin']:8.4f} {row['logp_chosen']:12.2f} "
              f"{row['logp_rejected']:14.2f} {row['answer_tokens']:10.1f}")
    print("\nwall time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_wall_s"].items()))
    for name, figures in result["dpo_held_out"].items():
        before, after = figures["before"] or {}, figures["after"] or {}
        print(f"{name}, its own held-out figures (against its own reference): accuracy "
              f"{before.get('accuracy', float('nan')):.3f} -> {after.get('accuracy', float('nan')):.3f}, margin "
              f"{before.get('margin', float('nan')):.4f} -> {after.get('margin', float('nan')):.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"\n{args.out / 'result.json'}")


if __name__ == "__main__":
    main()
