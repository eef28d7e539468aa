"""GGUF export time, file size and peak memory for a random-init model of Mistral-7B's architecture.

Writes a Mistral-7B-shaped model (32 layers, hidden 4096, 32/8 heads, MLP 14336, vocab 32000, bf16,
~14.5 GB, sharded safetensors, Mistral's real SentencePiece tokenizer from mistral-common) tensor by
tensor without ever building it in memory, then runs `zephyr-train export` on it in a subprocess for
each type and reports wall time, file size and the child's peak RSS, and reads each file back with
gguf's reader (tensor count, types). Needs ~45 GB of free disk for f16 and q8_0 (the model, then each
file, deleted as it goes unless --keep). `--layers 4` runs a smaller model of the same widths.

Usage: python benchmarks/gguf_export.py [--layers 32] [--quants f16,q8_0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISTRAL_7B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
              "vocab_size": 32000}


def write_random_mistral(target: Path, layers: int) -> int:
    """Sharded bf16 safetensors (one shard per layer) + config + tokenizer; returns the parameter count."""
    import torch
    from mistral_common import __file__ as common_file
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, MistralConfig

    from zephyr_train.data.chat_template import ZEPHYR

    config = MistralConfig(**MISTRAL_7B, num_hidden_layers=layers, max_position_embeddings=32768,
                           sliding_window=4096, rope_theta=10000.0, tie_word_embeddings=False, dtype="bfloat16",
                           architectures=["MistralForCausalLM"])
    config.save_pretrained(target)
    h, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = h // config.num_attention_heads * config.num_key_value_heads
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    shards: dict[str, dict[str, torch.Tensor]] = {"embed": {"model.embed_tokens.weight": rand(v, h)}}
    weight_map: dict[str, str] = {}
    for i in range(layers):
        p = f"model.layers.{i}."
        shards[f"layer{i}"] = {p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
                               p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
                               p + "mlp.gate_proj.weight": rand(m, h), p + "mlp.up_proj.weight": rand(m, h),
                               p + "mlp.down_proj.weight": rand(h, m),
                               p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                               p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}
        _save(shards.pop(f"layer{i}"), target, f"layer{i}", weight_map, save_file)
    shards["head"] = {"model.norm.weight": torch.ones(h, dtype=torch.bfloat16), "lm_head.weight": rand(v, h)}
    for name, tensors in shards.items():
        _save(tensors, target, name, weight_map, save_file)
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    raw = target / "tokenizer-src"
    raw.mkdir()
    shutil.copy(Path(common_file).parent / "data" / "tokenizer.model.v1", raw / "tokenizer.model")
    (raw / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                                                           "eos_token": "</s>", "unk_token": "<unk>", "legacy": False}))
    tokenizer = AutoTokenizer.from_pretrained(raw)
    tokenizer.chat_template = ZEPHYR
    tokenizer.save_pretrained(target)
    shutil.copy(raw / "tokenizer.model", target / "tokenizer.model")
    shutil.rmtree(raw)
    return 2 * v * h + h + layers * (2 * h * h + 2 * kv * h + 3 * m * h + 2 * h)


def _save(tensors: dict, target: Path, name: str, weight_map: dict, save_file) -> None:
    file = f"model-{name}.safetensors"
    save_file(tensors, target / file, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(tensors, file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--quants", default="f16,q8_0")
    parser.add_argument("--keep", help="directory to keep the model and files in")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    model = work / "model"
    try:
        start = time.perf_counter()
        params = write_random_mistral(model, args.layers)
        size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        print(f"random Mistral-7B-shaped model, {args.layers} layers: {params / 1e9:.2f}B params, "
              f"{size / 2**30:.2f} GiB bf16 safetensors, written in {time.perf_counter() - start:.0f} s")
        for quant in args.quants.split(","):
            out = work / f"model-{quant}.gguf"
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "zephyr_train", "export", str(model), "--gguf", str(out),
                                   "--quant", quant, "--overwrite"], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                print(f"{quant}: failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
            from gguf import GGUFReader

            reader = GGUFReader(out)
            kinds = sorted({t.tensor_type.name for t in reader.tensors})
            print(f"{quant}: {out.stat().st_size / 2**30:.2f} GiB, {wall:.0f} s wall, peak RSS so far {rss:.0f} MiB, "
                  f"{len(reader.tensors)} tensors ({', '.join(kinds)})")
            del reader
            if not args.keep:
                out.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
