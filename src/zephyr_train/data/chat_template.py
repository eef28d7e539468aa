"""The Zephyr chat template, and a training twin that marks what the loss may see.

The public template (zephyr-7b-beta's tokenizer_config.json) has no `{% generation %}` markers, so
TRL's assistant-only loss would mask every token. `ZEPHYR_TRAINING` renders byte-identical text and
marks each assistant reply plus its EOS, so the model learns both to answer and to stop. The saved
tokenizer keeps the public template: what users render at inference is what training saw.
"""

from __future__ import annotations

import difflib
from typing import Any

from zephyr_train.errors import UserError

ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

ZEPHYR_TRAINING = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)

BUILTIN = {"zephyr": (ZEPHYR, ZEPHYR_TRAINING)}


def resolve(spec: str, source: str = "<recipe>") -> tuple[str, str]:
    """(inference template, training template) for a recipe's `chat_template` value.

    An inline Jinja string serves both roles; it must carry `{% generation %}` markers itself
    for assistant-only loss (checked in `check_trainable`).
    """
    if spec in BUILTIN:
        return BUILTIN[spec]
    if "{%" in spec or "{{" in spec:
        return spec, spec
    close = difflib.get_close_matches(spec, list(BUILTIN), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"{source}: chat_template {spec!r} is not a built-in template; {hint}"
                    f"use one of {', '.join(BUILTIN)} or an inline Jinja string")


def check_trainable(training_template: str, assistant_only_loss: bool, source: str) -> None:
    if assistant_only_loss and "{% generation %}" not in training_template.replace("{%-", "{%"):
        raise UserError(f"{source}: chat_template has no {{% generation %}} markers, so assistant-only loss "
                        "would train on nothing; add the markers around assistant replies or set "
                        "sft.assistant_only_loss=false")


def adds_bos(tokenizer: Any) -> bool:
    """Whether plain encoding (what inference does with a rendered prompt) prepends BOS."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def tokenize_messages(tokenizer: Any, messages: list[dict], training_template: str, bos: bool) -> dict:
    """input_ids and assistant mask for one conversation, with exactly one BOS when the model uses one.

    Inference renders the public template to text and encodes it with special tokens, which adds
    one BOS; templates never contain it, so we add it here the same way, never twice.
    """
    out = tokenizer.apply_chat_template(
        messages, chat_template=training_template, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if bos and ids[:1] != [tokenizer.bos_token_id]:
        ids, mask = [tokenizer.bos_token_id] + ids, [0] + mask
    return {"input_ids": ids, "assistant_masks": mask}
