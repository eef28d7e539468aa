"""The embedded default: a tiny Mistral and sample data, because nothing can be downloaded here.

`builtin:tiny-mistral` is a random-init Mistral (same architecture as Mistral-7B, ~1.8M
parameters) with a byte-level BPE tokenizer trained on the bundled sample data and the Zephyr chat
template. It is built on first use, deterministically from a seed and the bundled files, and cached.
`builtin:tiny-mistral-32k` is the same small model carrying Mistral-7B-v0.1's real tokenizer (SentencePiece,
32000 tokens, `<s>` 1, `</s>` 2, no pad token), built from the copy PyPI's `mistral-common` ships as
`mistral_common/data/tokenizer.model.v1`: what a user's real Mistral tokenizes, without a Hub download.
`builtin:smollm2-135m` is a real pretrained chat model, SmolLM2-135M-Instruct, rebuilt from the GGUF a PyPI
package ships (data/packaged.py).
`builtin:ultrachat-sample` and `builtin:ultrafeedback-sample` are the bundled datasets, written by
`scripts/make_sample_data.py` in the public `ultrachat_200k` and `ultrafeedback_binarized` schemas.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zephyr_train.data import packaged
from zephyr_train.data.chat_template import ZEPHYR
from zephyr_train.data.sources import PREFIX, cache_root
from zephyr_train.errors import UserError

SAMPLE_ROOT = Path(__file__).parent / "sample_files"
DATASETS = {"ultrachat-sample": SAMPLE_ROOT / "ultrachat", "ultrafeedback-sample": SAMPLE_ROOT / "ultrafeedback"}

# Mistral-7B-v0.1's shape, scaled down: GQA, SwiGLU, RoPE theta 1e4. Every width is a multiple of 64, the
# block size bitsandbytes' CPU 4-bit kernels need (Mistral-7B's 4096 and 14336 are too).
MODELS: dict[str, dict[str, Any]] = {
    "tiny-mistral": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096},
    # big enough to be compute-bound on a CPU; used by the benchmarks
    "tiny-mistral-25m": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096},
    # weights dominate its memory: the DPO benchmark's reference-model comparison
    "tiny-mistral-100m": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
                          "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096},
    # the tiny model's shape with Mistral-7B's real 32000-token tokenizer (~9M parameters, most in the embeddings)
    "tiny-mistral-32k": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000},
}

REAL_TOKENIZER = {"tiny-mistral-32k"}  # built from mistral-common's tokenizer.model.v1, not trained here
MAX_POSITIONS = 4096  # context length of the built-in models
SEED = 1234
BUILD_VERSION = 1  # bump when the build recipe changes, so caches are rebuilt


def dataset_dir(name: str) -> Path | None:
    return DATASETS.get(name.removeprefix(PREFIX))


def names() -> list[str]:
    """Every built-in model's name, as a recipe spells it."""
    return [f"{PREFIX}{key}" for key in (*MODELS, *packaged.PACKAGED)]


def model_dir(name: str) -> Path:
    """The cached built-in model's directory, building it first if needed."""
    key = name.removeprefix(PREFIX)
    if key in packaged.PACKAGED:
        return packaged.model_dir(key)
    if key not in MODELS:
        raise KeyError(key)
    corpus = "mistral-v1" if key in REAL_TOKENIZER else _corpus_digest()
    digest = hashlib.sha256(json.dumps([MODELS[key], SEED, BUILD_VERSION, corpus]).encode())
    target = cache_root() / f"{key}-{digest.hexdigest()[:12]}"
    if not (target / "config.json").exists():
        _build(key, target)
    return target


def _corpus_files() -> list[Path]:
    return sorted(SAMPLE_ROOT.rglob("*.jsonl"))


def _corpus_digest() -> str:
    h = hashlib.sha256()
    for path in _corpus_files():
        h.update(path.read_bytes())
    return h.hexdigest()


def _corpus() -> list[str]:
    texts = []
    for path in _corpus_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for key in ("messages", "chosen", "rejected"):
                texts.extend(m["content"] for m in row.get(key) or [])
    return texts + ["<|system|>\n", "<|user|>\n", "<|assistant|>\n"]


def build_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast


    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # Like Mistral's tokenizer: encoding text prepends one BOS.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", model_max_length=2048)
    fast.chat_template = ZEPHYR
    return fast


def mistral_v1_model_file() -> Path:
    """mistral-common's copy of Mistral-7B-v0.1's SentencePiece model; UserError when it is not installed."""

    try:
        import mistral_common
        import sentencepiece  # noqa: F401 - transformers converts the model file with it
    except ImportError:
        raise UserError("builtin:tiny-mistral-32k carries Mistral-7B's real tokenizer, which comes from the "
                        "mistral-common package and is converted with sentencepiece; pip install mistral-common "
                        "sentencepiece (or use builtin:tiny-mistral)") from None
    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def mistral_v1_tokenizer() -> Any:
    """Mistral-7B-v0.1's tokenizer as transformers loads it: SentencePiece converted to a fast tokenizer,
    BOS added on encode, no EOS, no pad token (tokenizer_config.json of mistralai/Mistral-7B-v0.1)."""
    from transformers import AutoTokenizer


    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(mistral_v1_model_file(), Path(tmp) / "tokenizer.model")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": True,
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
            "clean_up_tokenization_spaces": False, "model_max_length": 32768}))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    tokenizer.chat_template = ZEPHYR
    return tokenizer


def _build(key: str, target: Path) -> None:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    dims = MODELS[key]
    tokenizer = mistral_v1_tokenizer() if key in REAL_TOKENIZER else build_tokenizer(dims["vocab_size"])
    config = MistralConfig(**{**dims, "vocab_size": len(tokenizer)}, max_position_embeddings=MAX_POSITIONS,
                           sliding_window=4096, rope_theta=10000.0, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    model = MistralForCausalLM(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: processes building at once never see half a model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
