"""Models to export: the built-in tiny model (byte-level BPE) and a small random Mistral with Mistral-7B's
real SentencePiece tokenizer (shipped by `mistral-common`), saved the way transformers 5 saves it
(tokenizer.json only) and, like the Hub repo, with tokenizer.model beside it; both legacy=True, with
`"legacy": true` written back into tokenizer_config.json as Mistral-7B's has it (transformers 5 does not
save the key). The "first" directory is saved from a legacy=False tokenizer ('▁' only at the start of
the text), which llama.cpp cannot reproduce and the export refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHATS = [
    [{"role": "user", "content": "How do I bake bread at home?"}],
    [{"role": "system", "content": "You are a friendly assistant."},
     {"role": "user", "content": "Explain photosynthesis in two sentences, please."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
     {"role": "user", "content": "List 3 colours: red, ..."}],
]


def spm_file() -> Path:
    common = pytest.importorskip("mistral_common")
    path = Path(common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.exists():
        pytest.skip("mistral-common ships no tokenizer.model.v1 here")
    return path


@pytest.fixture(scope="session")
def spm_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """{"json": tokenizer.json only, "model": with tokenizer.model, "first": tokenizer.json only, without
    `legacy` (so '▁' only at the start of the text)}: a 2-layer random Mistral, vocab 32000."""
    import json

    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from zephyr_train.data.chat_template import ZEPHYR

    root = tmp_path_factory.mktemp("spm")
    raw = root / "raw"
    raw.mkdir()
    shutil.copy(spm_file(), raw / "tokenizer.model")
    (raw / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": True}))
    tokenizers = {legacy: AutoTokenizer.from_pretrained(raw, legacy=legacy) for legacy in (True, False)}
    for tokenizer in tokenizers.values():
        tokenizer.chat_template = ZEPHYR
        tokenizer.pad_token = tokenizer.eos_token
    config = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=32000, max_position_embeddings=4096, sliding_window=4096,
                           tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = MistralForCausalLM(config)
    dirs = {"json": root / "json", "model": root / "model", "first": root / "first"}
    for kind, path in dirs.items():
        model.save_pretrained(path)
        tokenizers[kind != "first"].save_pretrained(path)
        if kind != "first":
            config = json.loads((path / "tokenizer_config.json").read_text())
            (path / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}))
    shutil.copy(raw / "tokenizer.model", dirs["model"] / "tokenizer.model")
    return dirs
