"""Every chat template TRL ships a training twin for renders byte-identical text, and its assistant mask
covers exactly the assistant replies, on our tokenizer with the family's special tokens added."""

from __future__ import annotations

import re

import pytest

from zephyr_train.config.recipe import ModelSpec
from zephyr_train.data import chat_template
from zephyr_train.data.chat_template import resolve, training_twin, trl_pair, trl_templates
from zephyr_train.errors import UserError

WITH_TWIN = [n for n, p in trl_templates().items() if p.with_name(f"{n}_training.jinja").exists()]
CONVERSATION = [{"role": "system", "content": "SYSZ be brief"},
                {"role": "user", "content": "USRA what is two plus two"},
                {"role": "assistant", "content": "ASTA four"},
                {"role": "user", "content": "USRB and three plus three"},
                {"role": "assistant", "content": "ASTB six"}]
# A family's control tokens: <|...|>, <｜...｜>, <start_of_turn>, [INST] and the like, as they appear in its text
SPECIAL = re.compile(r"<[|｜][^<>\s'\"]{1,40}?[|｜]>|<(?:start|end)_of_turn>|<\|?[a-z_]{2,20}\|?>|\[/?[A-Z_]{3,}\]")


@pytest.fixture(scope="module")
def base_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _render(tokenizer, messages, template):
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)


def test_trl_ships_the_families_the_issue_names():
    assert {"llama3", "qwen2_5", "gemma", "phi3"} <= set(WITH_TWIN) and len(WITH_TWIN) >= 25


def _render_and_mask(tokenizer, family):
    """(inference text, twin text, decoded trained tokens) with transformers' own rendering, or None when
    the family cannot render a plain-text conversation."""
    inference = trl_templates()[family].read_text(encoding="utf-8")
    twin = trl_templates()[family].with_name(f"{family}_training.jinja").read_text(encoding="utf-8")
    for messages in (CONVERSATION, CONVERSATION[1:]):  # Gemma has no system role: the same without it
        try:
            text = _render(tokenizer, messages, inference)
            twin_text = _render(tokenizer, messages, twin)
        except Exception:  # noqa: BLE001 - e.g. VLM templates expect content blocks
            continue
        out = tokenizer.apply_chat_template(messages, chat_template=twin, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = out["input_ids"], out["assistant_masks"]
        return text, twin_text, tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    return None


@pytest.mark.parametrize("family", WITH_TWIN)
def test_training_twin_renders_the_same_text_and_masks_assistant_replies(family, base_tokenizer):
    """Where we train with TRL's twin, transformers renders it byte-identically and its mask is exactly the
    assistant replies; where we refuse it, transformers shows why (other text, a wrong mask, or no render)."""
    inference, training = trl_pair(family)
    tokenizer = base_tokenizer.__class__.from_pretrained(base_tokenizer.name_or_path)
    shipped = trl_templates()[family].read_text(encoding="utf-8")
    twin = trl_templates()[family].with_name(f"{family}_training.jinja").read_text(encoding="utf-8")
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(set(SPECIAL.findall(shipped + twin)))})
    rendered = _render_and_mask(tokenizer, family)
    works = rendered is not None and rendered[0] == rendered[1] and "ASTA four" in rendered[2] \
        and "ASTB six" in rendered[2] and not any(m in rendered[2] for m in ("USRA", "USRB", "SYSZ"))
    assert (training == twin) == works, (family, rendered)
    assert training_twin(inference) == training


def test_most_twins_are_used():
    used = [f for f in WITH_TWIN if trl_pair(f)[1] != trl_pair(f)[0]]
    assert {"llama3", "qwen2_5", "gemma", "gemma3", "phi3", "phi3_5"} <= set(used) and len(used) >= 20


def test_auto_uses_the_tokenizers_template_and_its_twin(tmp_path):
    llama, llama_training = trl_pair("llama3")
    (tmp_path / "chat_template.jinja").write_text(llama, encoding="utf-8")
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path=str(tmp_path))) == (llama, llama_training)
    assert resolve("tokenizer", "r.yaml", ModelSpec(name_or_path=str(tmp_path))) == (llama, llama)
    # tokenizer_config.json's chat_template (older saves), a template TRL has no twin for: itself
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages[0].content }}"}')
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path=str(tmp_path))) == ("{{ messages[0].content }}",) * 2
    with pytest.raises(UserError, match="chat_template has no {% generation %} markers"):
        chat_template.check_trainable("{{ messages[0].content }}", True, "r.yaml")


def test_auto_for_template_less_bases_is_zephyr(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path=str(tmp_path))) == chat_template.BUILTIN["zephyr"]
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path="builtin:tiny-mistral")) == chat_template.BUILTIN["zephyr"]
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path="mistralai/Mistral-7B-v0.1")) == \
        chat_template.BUILTIN["zephyr"]  # shipped fact: no template, so no download needed to know
    assert resolve("auto", "r.yaml", ModelSpec(name_or_path="someone/not-cached-model")) is None  # check: unknown
    with pytest.raises(UserError, match="has no chat template; use auto or zephyr"):
        resolve("tokenizer", "r.yaml", ModelSpec(name_or_path=str(tmp_path)))


def test_named_families_and_unknown_names():
    assert resolve("llama3")[1] == trl_pair("llama3")[1]
    assert resolve("llama3_1") == (trl_pair("llama3_1")[0],) * 2  # no twin in TRL: the template itself
    with pytest.raises(UserError, match="TRL ships no plain ChatML template"):
        resolve("chatml", "r.yaml")
    with pytest.raises(UserError, match="did you mean 'llama3'"):
        resolve("lama3", "r.yaml")


def test_check_says_which_template_trains(tmp_path):
    from zephyr_train.data.chat_template import describe

    (tmp_path / "chat_template.jinja").write_text(trl_pair("llama3")[0], encoding="utf-8")
    assert describe("auto", ModelSpec(name_or_path=str(tmp_path))) == \
        "template: auto -> llama3; trains with a training twin with {% generation %} markers, same text"
    assert "assistant-only loss impossible" in describe("qwen3", ModelSpec(name_or_path="x"))
    assert "read when the stage starts" in describe("auto", ModelSpec(name_or_path="someone/not-cached-model"))


def test_dpo_adds_bos_only_to_templates_without_one(base_tokenizer):
    from zephyr_train.stages.policy import with_bos

    llama = trl_pair("llama3")[0]
    assert "bos_token" in llama and with_bos(llama, base_tokenizer) == llama  # one BOS, the template's
    assert with_bos(chat_template.ZEPHYR, base_tokenizer).startswith("{{ bos_token }}") == \
        chat_template.adds_bos(base_tokenizer)


def test_auto_at_stage_start_offline_is_one_line():
    """A stage may download the tokenizer files; offline and not cached it stops with one line."""
    with pytest.raises(UserError, match="cannot read someone/not-cached-model's tokenizer files"):
        resolve("auto", "r.yaml", ModelSpec(name_or_path="someone/not-cached-model"), download=True)
