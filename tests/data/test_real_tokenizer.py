"""Mistral-7B-v0.1's real tokenizer (SentencePiece, 32000 tokens, `<s>` 1, `</s>` 2, no pad token), built
from the copy mistral-common ships: SFT tokenization equals inference tokenization, DPO's prompt/completion
boundary too, and a whole run on a small random Mistral carrying it (`builtin:tiny-mistral-32k`)."""

from __future__ import annotations

import pytest

from tests.data.test_chat_template import CONVERSATIONS, REAL
from zephyr_train.data.chat_template import ZEPHYR, ZEPHYR_TRAINING, adds_bos, tokenize_messages

pytest.importorskip("mistral_common", reason="the real Mistral tokenizer comes from mistral-common (dev extra)")
pytest.importorskip("sentencepiece", reason="transformers converts Mistral's tokenizer.model with it (dev extra)")

@pytest.fixture(scope="module")
def mistral_dir():
    from zephyr_train.data import builtin

    return builtin.model_dir("builtin:tiny-mistral-32k")


@pytest.fixture(scope="module")
def mistral(mistral_dir):
    """As a user's run loads it (`modeling.load_tokenizer`): pad set to EOS, since Mistral has none."""
    from zephyr_train.config.recipe import ModelSpec
    from zephyr_train.inference.modeling import load_tokenizer

    return load_tokenizer(str(mistral_dir), ModelSpec(name_or_path=str(mistral_dir)), ZEPHYR)


def test_it_is_mistral_7b_v01s_tokenizer(mistral_dir, mistral):
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(mistral_dir)
    assert type(saved).__name__ == "TokenizersBackend" and len(saved) == 32000
    assert (saved.bos_token_id, saved.eos_token_id, saved.unk_token_id, saved.pad_token) == (1, 2, 0, None)
    assert mistral.pad_token_id == mistral.eos_token_id == 2  # pad handling: pad == eos at run time
    # transformers' BPE merges runs of spaces ("▁▁") where SentencePiece itself splits them ("▁" + "▁b"): the
    # converted tokenizer differs from SentencePiece there, so the check uses text without such runs
    text = "Hello world\nZürich — 3.14 😀 日本, code: return x ** 2"
    import sentencepiece as spm

    from zephyr_train.data.builtin import mistral_v1_model_file

    reference = spm.SentencePieceProcessor(model_file=str(mistral_v1_model_file())).encode(text)
    assert saved(text)["input_ids"] == [1] + reference  # the same ids as SentencePiece itself, one BOS


# The text the templates render does not depend on the tokenizer: tests/data/test_chat_template.py checks it,
# on these conversations too; here the tokens.
@pytest.mark.parametrize("messages", CONVERSATIONS[:4] + REAL)
def test_sft_tokens_equal_inference_tokens(mistral, messages):
    out = tokenize_messages(mistral, messages, ZEPHYR_TRAINING, bos=adds_bos(mistral))
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids == mistral(mistral.apply_chat_template(messages, tokenize=False))["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1  # one BOS
    eos = [i for i, t in enumerate(ids) if t == 2]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert sum(mask[i] for i in eos) == len(assistant)  # every assistant EOS trained, no other
    trained = mistral.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert trained.replace(" ", "") == "".join(m["content"] + "</s>" for m in assistant).replace(" ", "")


def test_padded_batch_keeps_every_eos_label(mistral):
    """pad == eos: padding is masked by position, never by id, so real EOS labels survive collation
    (labels built from the assistant mask as TRL's SFTTrainer builds them, then TRL's collator)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [tokenize_messages(mistral, m, ZEPHYR_TRAINING, bos=True) for m in (REAL[1], CONVERSATIONS[0])]
    examples = [{"input_ids": r["input_ids"], "labels": [t if m else -100 for t, m in
                                                          zip(r["input_ids"], r["assistant_masks"], strict=True)]}
                for r in rows]
    batch = DataCollatorForLanguageModeling(pad_token_id=mistral.pad_token_id)(examples)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert batch["input_ids"][short, n:].eq(2).all() and batch["labels"][short, n:].eq(-100).all()  # pad = eos id
    for i, row in enumerate(rows):
        labels = batch["labels"][i, :len(row["input_ids"])].tolist()
        assert labels.count(2) == sum(m["role"] == "assistant" for m in (REAL[1], CONVERSATIONS[0])[i])


def test_dpo_boundary_equals_inference_tokenization(mistral_dir, mistral, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from zephyr_train.stages.policy import with_bos

    prompt = REAL[0][:4]
    rows = [{"prompt": prompt, "chosen": [REAL[0][4]], "rejected": [{"role": "assistant", "content": "No."}]},
            {"prompt": REAL[1][:1], "chosen": REAL[1][1:], "rejected": [{"role": "assistant", "content": " Bye"}]}]
    mistral.chat_template = with_bos(ZEPHYR, mistral)  # as the DPO stage hands it to TRL
    try:
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(mistral_dir),
                             args=DPOConfig(output_dir=str(tmp_path), report_to="none", max_length=None, bf16=False),
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=mistral)
    finally:
        mistral.chat_template = ZEPHYR
    for row, tokens in zip(rows, trainer.train_dataset, strict=True):
        at_inference = mistral(mistral.apply_chat_template(row["prompt"], tokenize=False,
                                                           add_generation_prompt=True))["input_ids"]
        assert tokens["prompt_ids"] == at_inference  # the boundary is where generation starts
        full = mistral(mistral.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False))["input_ids"]
        assert tokens["prompt_ids"] + tokens["chosen_ids"] == full
        # the answer's EOS is in the completion; SentencePiece's legacy mode puts "▁" before the "\n" after it,
        # in training and at inference alike
        assert tokens["chosen_ids"][-3:] == [2, 28705, 13]


# A whole `run` (SFT then DPO) on builtin:tiny-mistral-32k:
# tests/data/test_curation.py::test_curated_data_trains_sft_and_dpo
