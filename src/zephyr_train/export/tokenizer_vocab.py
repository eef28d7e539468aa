"""The tokenizer as llama.cpp reads it: vocabulary, scores, token types, merges, special ids, template.

A GGUF carries no tokenizer.json; llama.cpp rebuilds the tokenizer from `tokenizer.ggml.*` metadata
and picks its algorithm from `tokenizer.ggml.model`:

- `llama` (SentencePiece BPE, Mistral-7B's 32000 tokens): pieces, their scores (llama.cpp merges the
  adjacent pair whose joined piece scores highest) and types (`<0x0A>` byte pieces are BYTE, `<s>` `</s>`
  CONTROL, `<unk>` UNKNOWN). From `tokenizer.model` when the directory has it (gguf's
  `SentencePieceVocab`, real scores); models saved by transformers 5 keep only `tokenizer.json`, whose
  byte-fallback BPE has no scores, so the pieces come from gguf's `LlamaHfVocab` and the scores are rebuilt
  as SentencePiece stores them: pieces best-first, the k-th ordinary piece scoring -k (Mistral's real scores
  are -(id - 259)), except pieces made only of '▁' (runs of spaces, 15 in Mistral's vocabulary), which
  SentencePiece scores -1e9 so that a space joins the word after it before it joins another space
  ("  a" is '▁' '▁a', not '▁▁' 'a').
  llama.cpp puts SentencePiece's '▁' before the text and after every special token (`</s>` of each
  Zephyr turn); transformers does that only with `legacy=True` (Mistral-7B's own tokenizer); a
  `legacy=False` tokenizer puts it at the start only (and transformers 5 does not save `legacy`, so a
  saved tokenizer may read back either way). There is no llama.cpp setting for "start only", so such a
  tokenizer is refused; what transformers does is probed, not read from the files (see `space_prefix`).
- `gpt2` (byte-level BPE, our built-in tiny model, SmolLM2): tokens spelled in the byte alphabet, merges
  in rank order, and `tokenizer.ggml.pre` naming the split regex: `gpt-2` (the regex of tokenizers'
  `ByteLevel(use_regex=True)`), or `smollm` (the same regex after splitting every digit apart) for a
  vocabulary whose digits are all single-digit tokens with no other character, where the two split
  alike -- llama.cpp's converter writes `smollm` for SmolLM and SmolLM2, whose tokenizer this is.

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
        model, pre, add_space_prefix = "llama", "default", space_prefix(model_dir)
    elif tokenizer_json and tokenizer_json["model"].get("type") == "BPE" and tokenizer_json["model"].get(
            "byte_fallback"):
        hf = gguf.LlamaHfVocab(model_dir)
        tokens, _, types = _columns(hf.all_tokens())
        scores = sentencepiece_scores(tokens, types)
        model, pre, add_space_prefix = "llama", "default", space_prefix(model_dir)
        notes.append("SentencePiece scores rebuilt from piece order (no tokenizer.model beside the model)")
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
        model, pre, add_space_prefix = "gpt2", "smollm" if _digits_stand_alone(tokens) else "gpt-2", None
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


SPACE = "\u2581"  # SentencePiece's '▁'
WHITESPACE_SCORE = -1e9  # what SentencePiece gives its pieces made only of '▁'


def sentencepiece_scores(tokens: list[bytes], types: list[int]) -> list[float]:
    """SentencePiece's scores for a byte-fallback BPE read from tokenizer.json (see the module docstring):
    ordinary pieces -0, -1, -2, ... in id order, pieces made only of '▁' -1e9; byte pieces and specials,
    which never merge, 0."""
    import gguf

    scores, rank = [], 0
    for token, kind in zip(tokens, types, strict=True):
        if kind != gguf.TokenType.NORMAL:
            scores.append(0.0)
        elif set(token.decode("utf-8", errors="replace")) == {SPACE}:
            scores.append(WHITESPACE_SCORE)
            rank += 1
        else:
            scores.append(-float(rank))
            rank += 1
    return scores


def space_prefix(model_dir: Path) -> bool:
    """tokenizer.ggml.add_space_prefix for a SentencePiece tokenizer, read off how transformers tokenizes
    (`b` alone, and `b` after the EOS token): llama.cpp puts '▁' in both places or in neither; a tokenizer
    that puts it only at the start of the text (legacy=False) is refused."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as err:  # noqa: BLE001 - any failure to load is the user's file
        raise UserError(f"{model_dir}: transformers cannot load the tokenizer ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from err
    eos = tokenizer.eos_token or "</s>"
    first = tokenizer.convert_ids_to_tokens(tokenizer("b", add_special_tokens=False).input_ids)
    after = tokenizer.convert_ids_to_tokens(tokenizer(f"{eos}b", add_special_tokens=False).input_ids)
    at_start, after_special = first[0].startswith(SPACE), after[-1].startswith(SPACE)
    if at_start != after_special:
        raise UserError(f"{model_dir}: the tokenizer puts SentencePiece's '▁' at the start of the text but not "
                        f"after special tokens such as {eos} (legacy=False); llama.cpp puts it in both places, so "
                        "every chat turn after the first would tokenize differently. If the model was trained with "
                        "Mistral-7B's own tokenizer (legacy=True), add \"legacy\": true to "
                        "tokenizer_config.json and export again")
    return at_start


def _digits_stand_alone(tokens: list) -> bool:
    """Whether every token that holds a digit is that digit alone: then GPT-2's split and llama.cpp's
    `smollm` (the same split, every digit apart) give the same tokens."""
    texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else t for t in tokens]
    digit_tokens = [t for t in texts if any(c in "0123456789" for c in t)]
    return bool(digit_tokens) and all(len(t) == 1 for t in digit_tokens)


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
