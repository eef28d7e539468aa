"""The training template renders the public Zephyr text byte for byte and trains only answers + EOS."""

from __future__ import annotations

import jinja2
import pytest

from zephyr_train.data.chat_template import ZEPHYR, ZEPHYR_TRAINING, adds_bos, resolve, tokenize_messages
from zephyr_train.errors import UserError

S = {"role": "system", "content": "You are a friendly chatbot."}
U1 = {"role": "user", "content": "How many helicopters can a human eat in one sitting?"}
A1 = {"role": "assistant", "content": "None: helicopters are not food.\n\nThey are\tmachines."}
U2 = {"role": "user", "content": "Why not?  Explain with `code` and a list:\n- one\n- two"}
A2 = {"role": "assistant", "content": "```python\nprint('no')\n```"}
CONVERSATIONS = [[U1, A1], [S, U1, A1], [U1, A1, U2, A2], [S, U1, A1, U2, A2], [U1], [S, U1]]
# the kinds of text real UltraChat/UltraFeedback conversations carry: spaces after line breaks, unicode,
# code with indentation, numbers, markdown, a leading space, an answer starting with punctuation
REAL = [
    [{"role": "system", "content": "You are Zephyr, a helpful assistant."},
     {"role": "user", "content": " Write a haiku about Zürich's lake — in English.\n\n  Thanks!"},
     {"role": "assistant", "content": "Blue water at dawn,\nswans drift past church towers —\nbells fade into mist."},
     {"role": "user", "content": "Now as Python:\n```python\ndef f(x):\n    return x ** 2\n```"},
     {"role": "assistant", "content": "```python\nprint('Blue water at dawn')\n```\n1. one\n2. two 3.14 日本"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "...and hello! 😀"}],
]


def render_like_the_hub(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    """How transformers renders chat templates: trim_blocks and lstrip_blocks on."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, eos_token="</s>", bos_token="<s>",
                                            add_generation_prompt=add_generation_prompt)


def test_public_template_renders_the_documented_format():
    text = render_like_the_hub(ZEPHYR, [S, U1], add_generation_prompt=True)
    assert text == f"<|system|>\n{S['content']}</s>\n<|user|>\n{U1['content']}</s>\n<|assistant|>\n"


@pytest.mark.parametrize("messages", CONVERSATIONS + REAL)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_training_template_is_byte_identical(tokenizer, messages, generation_prompt):
    public = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    assert public == render_like_the_hub(ZEPHYR, messages, generation_prompt)
    training = tokenizer.apply_chat_template(messages, chat_template=ZEPHYR_TRAINING, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    assert training == public


@pytest.mark.parametrize("messages", CONVERSATIONS[:4])
def test_only_assistant_content_and_eos_are_trained(tokenizer, messages):
    out = tokenize_messages(tokenizer, messages, ZEPHYR_TRAINING, bos=adds_bos(tokenizer))
    ids, mask = out["input_ids"], out["assistant_masks"]
    # one BOS, then exactly what inference gets from encoding the rendered public template
    public = tokenizer.apply_chat_template(messages, tokenize=False)
    assert ids == tokenizer(public)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    trained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    expected = "".join(m["content"] + "</s>" for m in messages if m["role"] == "assistant")
    assert trained == expected
    # every assistant turn's EOS is trained, although pad == eos; user/system EOS are not
    eos_positions = [i for i, t in enumerate(ids) if t == tokenizer.eos_token_id]
    assistant_turns = sum(m["role"] == "assistant" for m in messages)
    assert sum(mask[i] for i in eos_positions) == assistant_turns
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_template_names():
    assert resolve("zephyr") == (ZEPHYR, ZEPHYR_TRAINING)
    inline = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert resolve(inline) == (inline, inline)
    with pytest.raises(UserError, match="did you mean 'zephyr'"):
        resolve("zephir", "r.yaml")


def test_render_marks_generation_spans():
    from zephyr_train.data.chat_template import ZEPHYR, ZEPHYR_TRAINING, render

    messages = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    text, spans = render(ZEPHYR_TRAINING, messages)
    assert text == "<|user|>\nU</s>\n<|assistant|>\nA</s>\n"
    assert [text[a:b] for a, b in spans] == ["A</s>"]
    assert render(ZEPHYR, messages)[0] == text  # the training twin renders the public template's text


THINKING = ("{% for m in messages %}<|{{ m.role }}|>\n"
            "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}</s>{% endgeneration %}"
            "{% else %}{{ m.content }}</s>{% endif %}\n{% endfor %}"
            "{{ '/think' if enable_thinking is not defined or enable_thinking else '/no_think' }}")


@pytest.mark.parametrize("template", [THINKING, THINKING.replace("{% generation %}", "").replace(
    "{% endgeneration %}", "")], ids=["markers", "derived"])
def test_each_row_renders_with_its_own_template_variables(tokenizer, template):
    """A `chat_template_kwargs` column (SmolLM3's `enable_thinking`) reaches the template, row by row, as TRL
    passes it; rows without a value render with the template's default."""
    from datasets import Dataset

    from zephyr_train.stages.sft import tokenize_dataset

    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rows = Dataset.from_list([{"messages": chat, "chat_template_kwargs": {"enable_thinking": flag}}
                              for flag in (True, False)])
    tokenized = tokenize_dataset(rows, tokenizer, template, assistant_only=False)
    texts = [tokenizer.decode(ids) for ids in tokenized["input_ids"]]
    assert texts[0].endswith("/think") and texts[1].endswith("/no_think")
    plain = tokenize_dataset(Dataset.from_list([{"messages": chat}]), tokenizer, template, assistant_only=False)
    assert tokenizer.decode(plain["input_ids"][0]).endswith("/think")
