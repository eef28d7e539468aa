"""The tokenizer as llama.cpp reads it: vocabulary, scores, token types, merges, special ids, template.

A GGUF carries no tokenizer.json; llama.cpp rebuilds the tokenizer from `tokenizer.ggml.*` metadata
and picks its algorithm from `tokenizer.ggml.model`:

- `llama` (SentencePiece BPE, Mistral-7B's 32000 tokens): pieces, their scores (llama.cpp merges the
  adjacent pair whose joined piece scores highest) and types (`<0x0A>` byte pieces are BYTE, `<s>` `</s>`
  CONTROL, `<unk>` UNKNOWN). From `tokenizer.model` when the directory has it (gguf's
  `SentencePieceVocab`, real scores); models saved by transformers 5 keep only `tokenizer.json`, whose
  byte-fallback BPE has no scores, so the pieces come from gguf's `LlamaHfVocab` and the score of a
  piece is minus its id: SentencePiece stores BPE pieces best-first (Mistral's real scores are
  -(id - 259) for every ordinary piece), so the order llama.cpp merges in is the same.
- `gpt2` (byte-level BPE, our built-in tiny model): tokens spelled in the byte alphabet, merges in
  rank order, and `tokenizer.ggml.pre` naming the split regex (`gpt-2`, the regex of tokenizers'
  `ByteLevel(use_regex=True)`).

BOS/EOS/UNK/PAD ids, add_bos and the chat template come from gguf's `SpecialVocab`, which reads
tokenizer_config.json, tokenizer.json and config.json the way llama.cpp's converter does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr_train.errors import UserError


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    special: Any  # gguf.SpecialVocab: merges, special ids, add_bos/eos, chat template
    add_space_prefix: bool | None = None
    notes: list[str] = field(default_factory=list)


def _tokenizer_json(model_dir: Path) -> dict | None:
    path = model_dir / "tokenizer.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _is_gpt2_split(pre_tokenizer: dict | None) -> bool:
    """True when the pre-tokenizer is byte-level with GPT-2's split regex (what llama.cpp calls `gpt-2`)."""
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "Sequence":
        steps = pre_tokenizer.get("pretokenizers") or []
        return len(steps) == 1 and _is_gpt2_split(steps[0])
    return (pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True)
            and not pre_tokenizer.get("add_prefix_space", False))


def _special_ids(tokenizer_json: dict) -> set[int]:
    return {t["id"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}


def read_vocab(model_dir: Path, n_vocab: int) -> Vocab:
    """The vocabulary of the tokenizer saved in `model_dir`, padded to the model's `n_vocab` rows."""
    import logging

    import gguf

    # gguf's TemplateProcessing parser warns about the `<s> $A <s> $B` pair template; only single texts matter here
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    tokenizer_json = _tokenizer_json(model_dir)
    notes: list[str] = []
    if (model_dir / "tokenizer.model").exists():
        spm = gguf.SentencePieceVocab(model_dir)
        tokens, scores, types = _columns(spm.all_tokens())
        model, pre, add_space_prefix = "llama", "default", True
    elif tokenizer_json and tokenizer_json["model"].get("type") == "BPE" and tokenizer_json["model"].get(
            "byte_fallback"):
        hf = gguf.LlamaHfVocab(model_dir)
        tokens, _, types = _columns(hf.all_tokens())
        # see the module docstring: best-first piece order; byte pieces and specials never merge
        scores = [-float(i) if t == gguf.TokenType.NORMAL else 0.0 for i, t in enumerate(types)]
        model, pre, add_space_prefix = "llama", "default", True
        notes.append("SentencePiece scores taken from piece order (no tokenizer.model beside the model)")
    elif tokenizer_json and tokenizer_json["model"].get("type") == "BPE":
        if not _is_gpt2_split(tokenizer_json.get("pre_tokenizer")):
            raise UserError(f"{model_dir / 'tokenizer.json'}: a byte-level BPE whose pre-tokenizer "
                            f"({tokenizer_json.get('pre_tokenizer', {}).get('type')}) llama.cpp has no name for; "
                            "only GPT-2's ByteLevel split and SentencePiece vocabularies are exported")
        try:
            bpe = gguf.BpeVocab(model_dir)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{model_dir / 'tokenizer.json'}: not a byte-level BPE llama.cpp reads ({err})") from err
        tokens, scores, types = _columns(bpe.all_tokens())
        for token_id in _special_ids(tokenizer_json):  # in the vocabulary itself, so BpeVocab calls them NORMAL
            if token_id < len(types):
                types[token_id] = gguf.TokenType.CONTROL
        model, pre, add_space_prefix = "gpt2", "gpt-2", None
    else:
        raise UserError(f"{model_dir}: no tokenizer.model (SentencePiece) or BPE tokenizer.json to export; save the "
                        "tokenizer with the model (tokenizer.save_pretrained(DIR))")
    if len(tokens) > n_vocab:
        raise UserError(f"{model_dir}: the tokenizer has {len(tokens)} tokens but the model only {n_vocab} embedding "
                        "rows; export the tokenizer that was trained with this model")
    for i in range(len(tokens), n_vocab):  # embedding rows no token uses (padded vocabularies)
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    special = gguf.SpecialVocab(model_dir, load_merges=model == "gpt2", n_vocab=n_vocab)
    return Vocab(model, pre, tokens, scores, [int(t) for t in types], special, add_space_prefix, notes)


def _columns(rows: Any) -> tuple[list[bytes], list[float], list[int]]:
    tokens, scores, types = [], [], []
    for text, score, kind in rows:
        tokens.append(text)
        scores.append(float(score))
        types.append(kind)
    return tokens, scores, types


def add_to_writer(writer: Any, vocab: Vocab, fallback_template: str) -> str:
    """Write the tokenizer keys; returns the chat template written (the model's, else `fallback_template`)."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.special.chat_template is None:
        vocab.special.chat_template = fallback_template
    vocab.special.add_to_gguf(writer, quiet=True)
    return vocab.special.chat_template
