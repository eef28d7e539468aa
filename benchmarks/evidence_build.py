"""What the GPU evidence run trains on, made on the spot: no Hub on the lent GPU machine.

- The model: random-init weights of a shipped architecture (`preflight/architectures.py`'s MISTRAL_7B, or a
  scaled-down twin for `--tiny`), created directly in the load dtype on the device (7.2B bf16 parameters
  initialise in seconds on a GPU instead of minutes on 16 CPU cores) and written once as safetensors to a
  RAM-backed directory (/dev/shm when it has room), so that every stage loads it through the package's own
  `modeling.load_model`, 4-bit quantization included. A directory built before with the same shape is reused.
- The tokenizer: `builtin.build_tokenizer`, the byte-level BPE the tiny model uses, trained on the bundled
  sample; it has fewer ids than Mistral's 32,000, but the embedding and LM head keep the full 32,000 rows, so
  memory and FLOPs are those of Mistral-7B.
- The data: words of the bundled sample drawn into conversations and preference pairs with long-tailed
  (log-normal) lengths in the spirit of ultrachat_200k (several turns, long assistant replies, a tail past the
  2,048-token limit) and ultrafeedback_binarized (a short prompt, two answers of a few hundred tokens). The
  medians and spreads below are our choice, not measured from the real sets (there is no Hub here); each run's
  JSON records the token lengths actually produced.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zephyr_train.preflight.architectures import MISTRAL_7B, Architecture

# Mistral-7B-v0.1's shape, scaled down for --tiny: GQA 2:1, SwiGLU, widths multiples of 64 (bitsandbytes' CPU
# 4-bit block size), trains a step in well under a second on one CPU core.
TINY = Architecture(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=4096, max_position_embeddings=4096)
FULL = MISTRAL_7B
SEED = 1234
# Words per message, log-normal (median, sigma, cap), at a 2,048-token SFT limit; scaled with max_length.
SFT_TURNS = (1, 4)
USER_WORDS = (40, 0.9, 600)
ASSISTANT_WORDS = (220, 0.7, 1500)
PROMPT_WORDS = (60, 1.0, 700)
ANSWER_WORDS = (160, 0.8, 900)


def build_model(arch: Architecture, root: Path, device: str, dtype: str) -> tuple[Path, float]:
    """A random-init Mistral of shape `arch` saved under `root`; (directory, seconds spent building it).

    Reused when a directory with the same shape, dtype and seed is already there."""
    key = hashlib.sha256(json.dumps([asdict(arch), dtype, SEED, 1]).encode()).hexdigest()[:12]
    target = root / f"mistral-{arch.params / 1e6:.0f}m-{key}"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target, 0.0
    started = time.perf_counter()
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from zephyr_train.data import builtin

    tokenizer = builtin.build_tokenizer(arch.vocab_size)
    config = MistralConfig(
        hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, vocab_size=arch.vocab_size,
        max_position_embeddings=arch.max_position_embeddings, sliding_window=4096, rope_theta=10000.0,
        tie_word_embeddings=arch.tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=dtype)
    torch.manual_seed(SEED)
    with torch.device(device):
        model = MistralForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    model.save_pretrained(tmp, max_shard_size="50GB")
    tokenizer.save_pretrained(tmp)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    try:
        tmp.rename(target)
    except OSError:  # built meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
    return target, time.perf_counter() - started


def model_root(tiny: bool, needed_bytes: float) -> Path:
    """The tiny twin: zephyr-train's cache (reused by every later --tiny run). 7B: RAM-backed /dev/shm when it
    holds the weights with a quarter to spare, else the temp directory (never the results directory, which is
    committed)."""
    if tiny:
        from zephyr_train.data import builtin

        return builtin.cache_root() / "gpu-evidence"
    shm = Path("/dev/shm")
    if not tiny and shm.is_dir() and shutil.disk_usage(shm).free > 1.25 * needed_bytes:
        return shm / "zephyr-gpu-evidence"
    return Path(tempfile.gettempdir()) / "zephyr-gpu-evidence"


def _words() -> list[str]:
    from zephyr_train.data import builtin

    words: list[str] = []
    for path in sorted(builtin.SAMPLE_ROOT.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for message in row.get("messages") or []:
                words.extend(message["content"].split())
    return words or ["word"]


def _text(rng: random.Random, words: list[str], shape: tuple[float, float, int], scale: float) -> str:
    median, sigma, cap = shape
    n = int(min(cap, rng.lognormvariate(math.log(median), sigma)) * scale)
    return " ".join(rng.choice(words) for _ in range(max(1, n)))


def conversations(n: int, scale: float, seed: int = SEED) -> list[dict[str, Any]]:
    """`n` ultrachat_200k-shaped rows (prompt, messages); message lengths scaled by `scale`."""
    rng, words, rows = random.Random(seed), _words(), []
    for _ in range(n):
        messages = []
        for _ in range(rng.randint(*SFT_TURNS)):
            messages.append({"role": "user", "content": _text(rng, words, USER_WORDS, scale)})
            messages.append({"role": "assistant", "content": _text(rng, words, ASSISTANT_WORDS, scale)})
        rows.append({"prompt": messages[0]["content"], "messages": messages})
    return rows


def preference_pairs(n: int, scale: float, seed: int = SEED + 1) -> list[dict[str, Any]]:
    """`n` ultrafeedback_binarized-shaped rows (prompt, chosen, rejected); lengths scaled by `scale`."""
    rng, words, rows = random.Random(seed), _words(), []
    for _ in range(n):
        prompt = {"role": "user", "content": _text(rng, words, PROMPT_WORDS, scale)}
        chosen, rejected = (_text(rng, words, ANSWER_WORDS, scale) for _ in range(2))
        rows.append({"prompt": prompt["content"],
                     "chosen": [prompt, {"role": "assistant", "content": chosen}],
                     "rejected": [prompt, {"role": "assistant", "content": rejected}]})
    return rows


def write_data(root: Path, sft_rows: int, dpo_rows: int, scale: float) -> dict[str, Path]:
    """Directories of `train_sft.jsonl` / `train_prefs.jsonl`, a layout the mixture reads as named splits."""
    paths = {"sft": root / "ultrachat-synthetic", "dpo": root / "ultrafeedback-synthetic"}
    for kind, rows, split in (("sft", conversations(sft_rows, scale), "train_sft"),
                              ("dpo", preference_pairs(dpo_rows, scale), "train_prefs")):
        paths[kind].mkdir(parents=True, exist_ok=True)
        with (paths[kind] / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return paths


def token_lengths(model_dir: Path, data: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Quantiles of the tokens per example the stages will see (Zephyr template, one BOS), per stage."""
    from transformers import AutoTokenizer

    from zephyr_train.data.chat_template import ZEPHYR

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = ZEPHYR
    figures = {}
    for kind, key, split in (("sft", "messages", "train_sft"), ("dpo", "chosen", "train_prefs")):
        rows = [json.loads(line) for line in (data[kind] / f"{split}.jsonl").read_text().splitlines()]
        lengths = sorted(len(tokenizer(tokenizer.apply_chat_template(row[key], tokenize=False))["input_ids"])
                         for row in rows)
        figures[kind] = {"examples": len(lengths), "mean": sum(lengths) / len(lengths),
                         "p50": float(lengths[len(lengths) // 2]), "p90": float(lengths[int(0.9 * len(lengths))]),
                         "max": float(lengths[-1])}
    return figures
