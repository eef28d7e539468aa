"""The Zephyr chat template, and a training twin that marks what the loss may see.

The public template (zephyr-7b-beta's tokenizer_config.json) has no `{% generation %}` markers, so
TRL's assistant-only loss would mask every token. `ZEPHYR_TRAINING` renders byte-identical text and
marks each assistant reply plus its EOS, so the model learns both to answer and to stop. The saved
tokenizer keeps the public template: what users render at inference is what training saw.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Any

from zephyr_train.config.trainer_fields import package_dir
from zephyr_train.data import packaged
from zephyr_train.data.sources import PREFIX, is_builtin
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
SPECIAL = ("auto", "tokenizer")  # the model's own template: with TRL's training twin / exactly as it is
# Bases shipped without a chat template (Zephyr's own base among them): `auto` gives them Zephyr's.
TEMPLATELESS = {"mistralai/Mistral-7B-v0.1", "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B",
                "meta-llama/Meta-Llama-3.1-8B", "google/gemma-2-9b", "mistralai/Mixtral-8x7B-v0.1"}
_TWIN = "_training"


def trl_templates() -> dict[str, Path]:
    """TRL's shipped chat templates by family name (`llama3`, `qwen2_5`, ...), read from its package
    directory without importing it; `<name>_training.jinja` beside one is its training twin."""

    folder = package_dir("trl") / "chat_templates"
    return {p.stem: p for p in sorted(folder.glob("*.jinja")) if not p.stem.endswith(_TWIN)}


@cache
def trl_pair(name: str) -> tuple[str, str]:
    """(inference, training) for a TRL family; training is the inference one when TRL has no twin, or when
    its twin does not render our conversations as the original does (see `twin_renders_alike`)."""
    path = trl_templates()[name]
    twin = path.with_name(f"{name}{_TWIN}.jinja")
    inference = path.read_text(encoding="utf-8")  # as TRL reads them: identity comparison is exact
    training = twin.read_text(encoding="utf-8") if twin.exists() else inference
    return inference, training if twin_renders_alike(inference, training) else inference


# system, two user/assistant turns: multi-turn is where twins of reasoning templates differ
PROBE = [{"role": "system", "content": "S0"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
         {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]


def _environment() -> Any:
    """Jinja as transformers renders templates (its `raise_exception` and `strftime_now` helpers included:
    gpt-oss dates its system prompt), with `{% generation %}` blocks marked by \x02 ... \x03."""
    import datetime

    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller: Any) -> str:
            return "\x02" + caller() + "\x03"

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.datetime.now().strftime(f))
    return env


def render(template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Text of `messages` and its trained spans, without importing transformers (`check` shows and checks
    the trained spans of a recipe's first rows with it): the `{% generation %}` spans of a template that
    marks them, else the spans `derived_spans` reads off the template itself ([] when it cannot)."""
    compiled = _environment().from_string(template)

    def text_of(msgs: list[dict], add_generation_prompt: bool) -> str:
        marked = compiled.render(messages=msgs, bos_token="<s>", eos_token="</s>",
                                 add_generation_prompt=add_generation_prompt)
        return marked.replace("\x02", "").replace("\x03", "")

    marked = compiled.render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=False)
    text, spans, begin = "", [], 0
    for char in marked:
        if char == "\x02":
            begin = len(text)
        elif char == "\x03":
            spans.append((begin, len(text)))
        else:
            text += char
    if _has_markers(template):
        return text, spans
    return text, derived_spans(text_of, messages) or []


def derived_spans(text_of: Any, messages: list[dict]) -> list[tuple[int, int]] | None:
    """Each assistant reply's span read off the template itself, for templates without `{% generation %}`
    markers (SmolLM2's ChatML, most models' own): the text between the prompt rendered with
    `add_generation_prompt` and the conversation rendered up to that reply, trailing whitespace left out
    (the reply and its end-of-turn token train, as Zephyr's twin marks them). `text_of(messages,
    add_generation_prompt)` renders. None when the template is not prefix-consistent (an earlier turn
    renders differently once later ones follow): then no exact split exists."""
    full = text_of(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt, upto = text_of(messages[:i], True), text_of(messages[:i + 1], False)
        end = len(upto.rstrip())
        if not upto.startswith(prompt) or not full.startswith(upto) or end <= len(prompt):
            return None
        spans.append((len(prompt), end))
    return spans


def prefix_consistent(template: str) -> bool:
    """Whether the replies of a probe conversation (with and without a system turn) split off exactly."""
    for messages in (PROBE, PROBE[1:]):
        try:
            text, spans = render(template, messages)
        except Exception:  # noqa: BLE001 - a template that cannot render this probe says nothing
            continue
        return len(spans) == 2 and all(text[a:b].startswith(reply)
                                       for (a, b), reply in zip(spans, ("A1", "A2"), strict=True))
    return False


def twin_renders_alike(inference: str, training: str) -> bool:
    """Whether `training` renders a multi-turn text conversation byte-identically to `inference` and marks
    every assistant reply. TRL 1.16's twins for reasoning templates (qwen3, qwen3_5_*, qwen3_6, glm4moe)
    render earlier turns differently on purpose (prefix preservation for tool loops), and the VLM ones
    (idefics3, smolvlm, llava_next) expect content blocks: 27 of its 35 twins pass, the others are refused
    for assistant-only loss rather than training on text inference never shows."""
    if training == inference:
        return True
    for messages in (PROBE, PROBE[1:]):  # Gemma's templates raise on a system turn: the same without it
        try:
            text, _ = render(inference, messages)
            twin, spans = render(training, messages)
        except Exception:  # noqa: BLE001 - any template error means this probe cannot be rendered
            continue
        trained = "".join(twin[a:b] for a, b in spans)
        return twin == text and all(m["content"] in trained for m in messages if m["role"] == "assistant")
    return False


def _has_markers(template: str) -> bool:
    return "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


def renders_like_zephyr(template: str) -> bool:
    """Whether `template` is the public Zephyr one, spelled however: same text for a probe conversation."""
    from jinja2 import TemplateError

    probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
             {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
    try:
        return render(template, probe)[0] == render(ZEPHYR, probe)[0]
    except (TemplateError, TypeError, KeyError, ValueError):  # not Zephyr (ValueError: its raise_exception)
        return False


def training_twin(template: str) -> str:
    """What trains with `template`: itself when it marks assistant spans, Zephyr's twin for the public
    Zephyr template, TRL's twin for a template TRL recognizes (the exact text, as TRL compares), else itself."""
    if _has_markers(template):
        return template
    if renders_like_zephyr(template):
        return ZEPHYR_TRAINING
    for name, path in trl_templates().items():
        if path.read_text(encoding="utf-8") == template:
            return trl_pair(name)[1]
    return template


def model_template(name: str, revision: str = "main", download: bool = False) -> str | None:
    """The chat template the model's tokenizer ships ('' when it has none), None when it cannot be known
    without a download (`download` allows one: the start of a stage, never `check`). No torch."""
    import json

    if is_builtin(name):
        key = name.removeprefix(PREFIX)
        if key in packaged.PACKAGED:  # a real model's own template, read from its GGUF (None: package missing)
            return packaged.template(key)
        return ZEPHYR  # built with the public Zephyr template (data/builtin.py)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():  # a GGUF given as the model carries its template in its header
        return packaged.header_field(path, "tokenizer.chat_template", "model.name_or_path") or ""
    files: dict[str, Path | None] = {}
    for filename in ("chat_template.jinja", "tokenizer_config.json"):
        if path.is_dir():
            files[filename] = path / filename if (path / filename).is_file() else None
            continue
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename, revision=revision)
        if not isinstance(found, str) and download:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import RemoteEntryNotFoundError

            try:
                found = hf_hub_download(name, filename, revision=revision)
            except RemoteEntryNotFoundError:  # the repo has no such file (not: offline, or not cached)
                found = None
            except Exception as err:  # offline, no access, no such repo: say so before anything is written
                raise UserError(f"chat_template auto: cannot read {name}'s tokenizer files ({type(err).__name__}); "
                                "download the model first, or set chat_template (zephyr, a TRL family such as "
                                "llama3, or inline Jinja)") from None
        files[filename] = Path(found) if isinstance(found, str) else None
    if files["chat_template.jinja"] is not None:
        return files["chat_template.jinja"].read_text(encoding="utf-8")
    if files["tokenizer_config.json"] is None:
        return "" if name in TEMPLATELESS else None
    template = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8")).get("chat_template") or ""
    if isinstance(template, list):  # named variants: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    return template


def resolve(spec: str, source: str = "<recipe>", model: Any = None, download: bool = False) -> tuple[str, str] | None:
    """(inference template, training template) for a recipe's `chat_template` value; None for `auto` /
    `tokenizer` when the model's tokenizer is not on disk and `download` is off (`check` offline).

    - `zephyr`: the public Zephyr template and its marked twin (the default for template-less bases);
    - a TRL family (`llama3`, `qwen2_5`, `gemma`, `phi3`, ...: the `.jinja` files TRL ships) with TRL's
      training twin where it has one;
    - `auto` (the default): the model's own template with its training twin (see `training_twin`),
      Zephyr's when the tokenizer has none; `tokenizer`: the model's own template, unchanged;
    - an inline Jinja string serves both roles; it must carry `{% generation %}` markers itself
      for assistant-only loss (checked in `check_trainable`).
    """
    if spec in BUILTIN:
        return BUILTIN[spec]
    if spec in SPECIAL:
        if model is None:
            raise ValueError(f"chat_template {spec!r} needs the model it belongs to")
        own = model_template(model.name_or_path, model.revision, download)
        if own is None and download:  # no tokenizer_config.json at all: not a tokenizer we can read
            raise UserError(f"{source}: chat_template {spec}: {model.name_or_path} has no tokenizer_config.json; "
                            "set chat_template (zephyr, a TRL family such as llama3, or inline Jinja)")
        if own is None:
            return None
        if not own:
            if spec == "tokenizer":
                raise UserError(f"{source}: chat_template tokenizer: {model.name_or_path}'s tokenizer has no chat "
                                "template; use auto or zephyr (Zephyr's), a TRL family, or an inline Jinja string")
            return BUILTIN["zephyr"]
        return (own, training_twin(own)) if spec == "auto" else (own, own)
    families = trl_templates()
    if spec in families:
        return trl_pair(spec)
    if "{%" in spec or "{{" in spec:
        return spec, spec
    names = [*BUILTIN, *SPECIAL, *families]
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if spec.lower() == "chatml":  # asked for by name, but TRL ships none under it
        hint = "TRL ships no plain ChatML template (qwen2_5 and qwen3 are ChatML with Qwen's system prompt); "
    raise UserError(f"{source}: chat_template {spec!r} is not a known template; {hint}"
                    f"use one of {', '.join(names)} or an inline Jinja string")


def describe(spec: str, model: Any) -> str:
    """One line for `check`: which template a recipe's `chat_template` comes to, and what trains with it."""
    pair = resolve(spec, "<recipe>", model)
    if pair is None:
        return f"template: {spec}: {model.name_or_path}'s tokenizer is not on disk; read when the stage starts"
    name = "zephyr" if pair == BUILTIN["zephyr"] else next(
        (n for n, p in trl_templates().items() if p.read_text(encoding="utf-8") == pair[0]), None)
    shown = spec if spec == name or name is None else f"{spec} -> {name}"
    if "{%" in spec or "{{" in spec:
        shown = "inline Jinja"
    trains = "a training twin with {% generation %} markers, same text" if pair[0] != pair[1] else \
        "its own {% generation %} markers" if _has_markers(pair[1]) else \
        "reply spans derived from the template (prompt, then reply and end-of-turn)" if prefix_consistent(pair[1]) \
        else "no {% generation %} markers and no exact prompt/reply split (assistant-only loss impossible)"
    return f"template: {shown}; trains with {trains}"


def check_trainable(training_template: str, assistant_only_loss: bool, source: str) -> None:
    """Assistant-only loss needs the replies' spans: marked by the template, or derived from it exactly."""
    if assistant_only_loss and not _has_markers(training_template) and not prefix_consistent(training_template):
        raise UserError(f"{source}: chat_template has no {{% generation %}} markers and cannot be split exactly into "
                        "prompt and reply (an earlier turn renders differently once later turns follow); add the "
                        "markers around assistant replies, use chat_template: zephyr, or set "
                        "sft.assistant_only_loss=false")


def adds_bos(tokenizer: Any) -> bool:
    """Whether plain encoding (what inference does with a rendered prompt) prepends BOS."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def tokenize_messages(tokenizer: Any, messages: list[dict], training_template: str, bos: bool,
                      assistant_only: bool = True, variables: dict | None = None) -> dict:
    """input_ids and assistant mask for one conversation, with exactly one BOS when the model uses one.

    Inference renders the public template to text and encodes it with special tokens, which adds
    one BOS; templates never contain it, so we add it here the same way, never twice. `variables` are the
    row's template variables (a `chat_template_kwargs` column, e.g. SmolLM3's `enable_thinking`).
    """
    variables = variables or {}
    if _has_markers(training_template):
        out = tokenizer.apply_chat_template(
            messages, chat_template=training_template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True, **variables,
        )
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    else:
        ids, mask = _tokenize_derived(tokenizer, messages, training_template, assistant_only, variables)
    if bos and ids[:1] != [tokenizer.bos_token_id]:
        ids, mask = [tokenizer.bos_token_id] + ids, [0] + mask
    return {"input_ids": ids, "assistant_masks": mask}


def _tokenize_derived(tokenizer: Any, messages: list[dict], template: str, assistant_only: bool,
                      variables: dict) -> tuple[list[int], list[int]]:
    """Tokens of the rendered conversation and a mask of those inside the derived reply spans (by the
    tokenizer's character offsets: a token trains when it lies wholly inside a reply span)."""
    def text_of(msgs: list[dict], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt, **variables)

    text = text_of(messages, False)
    spans = derived_spans(text_of, messages) if assistant_only else [(0, len(text))]
    if spans is None:
        raise UserError("chat_template cannot be split exactly into prompt and reply for a training row; add "
                        "{% generation %} markers, use chat_template: zephyr, or set sft.assistant_only_loss=false")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(b > a and any(start <= a and b <= end for start, end in spans)) for a, b in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask
