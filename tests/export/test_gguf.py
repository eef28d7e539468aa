"""GGUF export read back by readers this project does not write: gguf's GGUFReader (metadata, tensor
names and types) and transformers' GGUF loader (`from_pretrained(dir, gguf_file=...)`), which must
tokenize chat prompts like the Hugging Face tokenizer and predict the same next tokens as the
Hugging Face model. llama.cpp itself runs the exports in test_llama_cpp.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli

pytest.importorskip("gguf", reason="the export extra: pip install -e .[export]")
from tests.export.conftest import CHATS


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    done = cli("export", str(tiny_model_dir), "--gguf", str(out / "tiny-f16.gguf"))  # the real command, once
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported" in done.stdout and "tiny-f16.Modelfile" in done.stdout
    from zephyr_train.export.to_gguf import export

    export(str(tiny_model_dir), str(out / "tiny-q8_0.gguf"), "q8_0")
    return {"f16": out / "tiny-f16.gguf", "q8_0": out / "tiny-q8_0.gguf"}


@pytest.fixture(scope="module")
def spm_exports(tmp_path_factory, spm_model_dirs) -> dict[tuple[str, str], Path]:
    from zephyr_train.export.to_gguf import export

    out = tmp_path_factory.mktemp("gguf-spm")
    wanted = [("model", "f16"), ("model", "q8_0"), ("json", "f16")]
    return {(kind, quant): export(str(spm_model_dirs[kind]), str(out / f"spm-{kind}-{quant}.gguf"), quant).path
            for kind, quant in wanted}


def field(reader, key):
    return reader.fields[key].contents()


def test_reader_sees_metadata_tokenizer_and_tensors(tiny_exports, tiny_model_dir):
    import json

    from gguf import GGMLQuantizationType as T
    from gguf import GGUFReader, TokenType

    from zephyr_train.data.chat_template import ZEPHYR

    config = json.loads((tiny_model_dir / "config.json").read_text())
    for quant, path in tiny_exports.items():
        reader = GGUFReader(path)
        assert field(reader, "general.architecture") == "llama"
        assert field(reader, "general.name") == tiny_model_dir.name
        assert field(reader, "general.license") == "apache-2.0"
        assert field(reader, "llama.block_count") == config["num_hidden_layers"]
        assert field(reader, "llama.attention.head_count_kv") == config["num_key_value_heads"]
        assert field(reader, "llama.rope.dimension_count") == config["hidden_size"] // config["num_attention_heads"]
        assert field(reader, "tokenizer.chat_template") == ZEPHYR
        assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"
        tokens = field(reader, "tokenizer.ggml.tokens")
        assert len(tokens) == config["vocab_size"] and len(field(reader, "tokenizer.ggml.merges")) > 1000
        ids = {name: field(reader, f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "unknown")}
        assert [tokens[i] for i in ids.values()] == ["<s>", "</s>", "<unk>"]
        assert field(reader, "tokenizer.ggml.add_bos_token") is True
        types = field(reader, "tokenizer.ggml.token_type")
        assert types[ids["bos"]] == types[ids["eos"]] == TokenType.CONTROL and types[300] == TokenType.NORMAL
        tensors = {t.name: t for t in reader.tensors}
        assert len(tensors) == 3 + 9 * config["num_hidden_layers"]
        assert tensors["blk.0.attn_norm.weight"].tensor_type == T.F32
        want = T.F16 if quant == "f16" else T.Q8_0
        matrices = ("token_embd.weight", "output.weight", "blk.3.ffn_down.weight")
        assert {tensors[n].tensor_type for n in matrices} == {want}
        assert list(tensors["blk.0.attn_k.weight"].shape) == [config["hidden_size"], 64]  # ggml order: (in, out)
    assert tiny_exports["q8_0"].stat().st_size < 0.6 * tiny_exports["f16"].stat().st_size


def test_rope_rows_become_adjacent_pairs():
    from zephyr_train.export.to_gguf import to_llama_cpp_rope

    heads, head_dim = 2, 8
    rows = np.arange(heads * head_dim, dtype=np.float32)[:, None].repeat(3, axis=1)
    out = to_llama_cpp_rope(rows, heads)[:, 0]
    # head 0 rows 0..7 (halves 0-3 / 4-7) -> 0,4,1,5,2,6,3,7; head 1 likewise from 8
    assert out.tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def check_same_tokens(hf_dir: Path, gguf_path: Path, ids: bool = True) -> None:
    """transformers' tokenizer built from the GGUF metadata renders (and, with `ids`, encodes) chats like the
    model's own. Not the ids of a SentencePiece file: transformers' GGUF loader builds a legacy=False tokenizer
    whatever the file says ('▁' only at the start), unlike llama.cpp, which test_llama_cpp.py runs instead."""
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(hf_dir)
    gguf_tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    assert gguf_tok.chat_template == hf_tok.chat_template
    for chat in CHATS:
        text = hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert gguf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == text
        if ids:
            assert gguf_tok(text).input_ids == hf_tok(text).input_ids


def check_same_predictions(hf_dir: Path, gguf_path: Path, quant: str) -> None:
    """Next-token logits on chat prompts: f16 close with the same top-1 everywhere; q8_0 within its error,
    the same top-1 wherever the two best tokens are further apart than that error."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    for chat in CHATS:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            want, got = hf(ids).logits[0], loaded(ids).logits[0]
        error, scale = (want - got).abs().max().item(), want.abs().max().item()
        if quant == "f16":
            assert error < 5e-3 * scale, (error, scale)
            assert torch.equal(want.argmax(-1), got.argmax(-1))
        else:
            assert error < 5e-2 * scale, (error, scale)
            top2 = want.topk(2, dim=-1).values
            decided = (top2[:, 0] - top2[:, 1]) > 2 * error
            assert decided.any() and torch.equal(want.argmax(-1)[decided], got.argmax(-1)[decided])


def test_transformers_reads_tiny_tokenizer(tiny_exports, tiny_model_dir):
    check_same_tokens(tiny_model_dir, tiny_exports["q8_0"])


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_transformers_reads_tiny_export_with_same_predictions(tiny_exports, tiny_model_dir, quant):
    check_same_predictions(tiny_model_dir, tiny_exports[quant], quant)


@pytest.mark.parametrize("kind", ["model", "json"])
def test_sentencepiece_vocabulary(spm_exports, spm_model_dirs, kind):
    """Mistral-7B's real tokenizer, from tokenizer.model (real scores) or tokenizer.json (scores from order)."""
    from gguf import GGUFReader, TokenType

    path = spm_exports[(kind, "f16")]
    reader = GGUFReader(path)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == 32000 and tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[13] == "<0x0A>"
    assert types[1] == TokenType.CONTROL and types[13] == TokenType.BYTE
    scores = field(reader, "tokenizer.ggml.scores")
    assert scores[1000] > scores[2000] > scores[31000]  # merge priority falls with the piece id
    assert [field(reader, f"tokenizer.ggml.{n}_token_id") for n in ("bos", "eos", "unknown")] == [1, 2, 0]
    assert field(reader, "tokenizer.ggml.add_space_prefix") is True  # '▁' first and after </s>, as legacy=True
    check_same_tokens(spm_model_dirs[kind], path, ids=False)


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_sentencepiece_mistral_predictions(spm_exports, spm_model_dirs, quant):
    check_same_predictions(spm_model_dirs["model"], spm_exports[("model", quant)], quant)


def test_modelfile_and_readme(tiny_exports):
    path = tiny_exports["f16"]
    modelfile = path.with_name("tiny-f16.Modelfile").read_text()
    assert "FROM ./tiny-f16.gguf" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n"""' \
        in modelfile
    for stop in ("</s>", "<|user|>", "<|system|>", "<|assistant|>"):
        assert f'PARAMETER stop "{stop}"' in modelfile
    readme = path.with_name("tiny-f16.README.md").read_text()
    for command in ("llama-server -m tiny-f16.gguf --jinja", "ollama create", "-f tiny-f16.Modelfile", "lms import"):
        assert command in readme
