"""MT-Bench answer generation: vLLM against batched transformers, on a random-init model.

Both backends answer the same questions (both turns, MT-Bench's per-category temperatures) through
`zephyr_train.eval.generation.Generator`, on the same model folder: `--size 7b` is Mistral-7B's
architecture (32 layers, hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocab 32000) with random weights
in bf16, needing a GPU; `--size tiny` is the built-in tiny model, a CPU sanity run (transformers only).
Random weights rarely emit EOS, so every answer runs to `--max-new-tokens`: this times the worst case.
Prints seconds and generated tokens per second per backend, and the share of greedy answers that match.
Usage: python benchmarks/mt_bench_generation.py [--size 7b|tiny] [--questions N] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]


def questions(n: int) -> list:
    from zephyr_train.eval.questions import Question

    return [Question(81 + i, CATEGORIES[i % len(CATEGORIES)],
                     [f"Question {i}: explain topic number {i} in a few sentences.", "Now summarise it in one line."])
            for i in range(n)]


def build_model(size: str, folder: Path) -> Path:
    from zephyr_train.data import builtin

    tiny = builtin.model_dir("builtin:tiny-mistral")
    if size == "tiny":
        return tiny
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8, sliding_window=4096, rope_theta=10000.0,
                           max_position_embeddings=32768, torch_dtype="bfloat16")
    with torch.device("cuda"):
        model = MistralForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)  # ids < 32000: any tokenizer that fits works
    del model
    torch.cuda.empty_cache()
    return folder


def time_backend(model_dir: Path, backend: str, asked: list, max_new: int, batch_size: int) -> dict:
    from zephyr_train.eval.generation import Generator
    from zephyr_train.eval.mt_bench import MtBenchJob, generate_answers

    start = time.perf_counter()
    generator = Generator(model_dir, backend, batch_size)
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        job = MtBenchJob(model_dir, Path(out), asked, f"bench-{backend}", max_new, backend=backend,
                         batch_size=batch_size)
        rows = generate_answers(job, generator=generator)
    done = time.perf_counter()
    tokens = sum(len(generator.tokenizer(t, add_special_tokens=False)["input_ids"])
                 for r in rows for t in r["choices"][0]["turns"])
    result = {"backend": backend, "load_s": round(loaded - start, 1), "generate_s": round(done - loaded, 1),
              "tokens": tokens, "tokens_per_s": round(tokens / (done - loaded), 1),
              "answers": {r["question_id"]: r["choices"][0]["turns"] for r in rows}}
    del generator
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - no CUDA: nothing to free
        pass
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=80, help="transformers batch (vLLM schedules its own)")
    parser.add_argument("--out", help="write the figures (without the answers) to this JSON file")
    args = parser.parse_args()
    from zephyr_train.eval.generation import vllm_usable
    from zephyr_train.eval.questions import TEMPERATURES

    asked = questions(args.questions)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_model(args.size, Path(folder))
        backends = ["transformers"] + (["vllm"] if vllm_usable() else [])
        results = [time_backend(model_dir, b, asked, args.max_new_tokens, args.batch_size) for b in backends]
    greedy = [x.question_id for x in asked if TEMPERATURES.get(x.category, 0.7) == 0.0]
    for result in results:
        print(f"{result['backend']:>12}: load {result['load_s']} s, {len(asked)} questions x 2 turns in "
              f"{result['generate_s']} s, {result['tokens']} tokens, {result['tokens_per_s']} tokens/s")
    if len(results) == 2:
        same = sum(results[0]["answers"][q] == results[1]["answers"][q] for q in greedy)
        print(f"greedy questions with identical answers from both backends: {same}/{len(greedy)}")
    if args.out:
        Path(args.out).write_text(json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in results],
                                             indent=2))


if __name__ == "__main__":
    main()
