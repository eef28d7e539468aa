"""What goes beside a GGUF: an Ollama Modelfile and a README snippet for LM Studio, Ollama and llama-server.

Ollama does not read `tokenizer.chat_template` from a GGUF (LM Studio and `llama-server --jinja` do);
it needs the template in its own Go-template syntax, and stop words, or the end-of-turn token and the
next turn are printed and generation runs on. The TEMPLATE is derived from the model's own Jinja template
(the one written into the GGUF: Zephyr's for every model this project trains from a template-less base,
SmolLM2's ChatML, Llama-3's, ...) by rendering probe conversations: what each role puts before and after
its content, what the template writes when the first message is not a system one (SmolLM2's default
system prompt), and the generation prompt. It is kept only if it renders the probes exactly as the Jinja
template does; a template that cannot be written so (content trimmed or escaped, turns that depend on
each other) gets no TEMPLATE and a comment saying why. For Zephyr it is
`{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n`. The files are named
after the GGUF (`OUT.Modelfile`, `OUT.README.md`), so an f16 and a q8_0 export can share a folder.

llama.cpp without `--jinja` does not run the file's template either: its built-in formatter guesses a
format from the template's text, and for Zephyr's it picks GLM-Edge's, which drops `</s>` and the
newlines, so prompts differ from what the model was trained on (the README says `--jinja`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zephyr_train.inference.source import ModelSource, final_model_of
from zephyr_train.run_files import RESOLVED_RECIPE
from zephyr_train.stages import KINDS

STOP_WORDS = ("<|system|>", "<|user|>", "<|assistant|>")
ROLES = ("system", "user", "assistant")
# probe conversations: with and without a system turn, several turns (a template whose turns depend on each
# other, or that changes the content, renders one of them differently from the Go template and is not used;
# Llama 3's `| trim` of each content is invisible here, as contents rarely start or end with whitespace)
PROBES = [
    [{"role": "user", "content": "U1"}],
    [{"role": "system", "content": "S0"}, {"role": "user", "content": "U1"}],
    [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
    [{"role": "system", "content": "S0"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "U2 with  spaces\nand a line"}, {"role": "assistant", "content": "A2"},
     {"role": "user", "content": "U3"}],
]


def companion_paths(target: Path) -> list[Path]:
    stem = target.with_suffix("")
    return [stem.with_name(stem.name + ".Modelfile"), stem.with_name(stem.name + ".README.md")]


def _special(model_dir: Path, key: str = "eos_token", default: str = "</s>") -> str:
    config = model_dir / "tokenizer_config.json"
    token = json.loads(config.read_text()).get(key) if config.exists() else None
    if isinstance(token, dict):
        token = token.get("content")
    return token or default


def _eos(model_dir: Path) -> str:
    return _special(model_dir)


def run_metadata(source: ModelSource) -> dict:
    """Name, license, base model and EOS text for the metadata, from the run's resolved recipe when there is one."""
    import yaml

    given = source.given
    name = given.name if final_model_of(given) else (
        f"{given.parent.name}-{given.name}" if (given / RESOLVED_RECIPE).exists() else given.name)
    meta: dict = {"name": name, "eos": _eos(source.adapter or source.path),
                  "bos": _special(source.adapter or source.path, "bos_token", "<s>")}
    for place in (given, *(given / kind for kind in reversed(KINDS)), source.path, source.path.parent):
        recipe_file = place / RESOLVED_RECIPE
        if recipe_file.exists():
            recipe = yaml.safe_load(recipe_file.read_text()) or {}
            meta["base_model"] = (recipe.get("model") or {}).get("name_or_path")
            meta["license"] = (recipe.get("hub") or {}).get("license")
            break
    if not meta.get("base_model"):
        meta["base_model"] = source.base
    meta["license"] = meta.get("license") or "apache-2.0"  # Mistral-7B's license, which a Zephyr model keeps
    return meta


@dataclass
class Turns:
    """A chat template as Go's text/template can say it: per role, the text before and after the content; the
    text written first when the first message is not a system one; the generation prompt."""

    start: str  # before everything (a template's own `bos_token`)
    default: str  # after `start` when the first message is not a system one (a default system turn)
    before: dict[str, str]
    after: dict[str, str]
    generation: str

    def render(self, messages: list[dict]) -> str:
        """What the Go template below renders (the probes compare it with Jinja's rendering)."""
        text = self.start + ("" if messages and messages[0]["role"] == "system" else self.default)
        for m in messages:
            text += self.before[m["role"]] + m["content"] + self.after[m["role"]]
        return text + self.generation

    def go(self) -> str:
        def lit(text: str) -> str:  # text/template copies text outside actions verbatim; only "{{" needs care
            return text.replace("{{", '{{ "{{" }}')

        text = lit(self.start)
        if self.default:
            text += ("{{ " if text else "{{- ") + 'if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
            text += lit(self.default) + "{{ end }}"
        shared = self._shared()
        if shared:
            pre, mid, after = shared
            body = f"{lit(pre)}{{{{ .Role }}}}{lit(mid)}{{{{ .Content }}}}{lit(after)}"
        else:
            body = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{r}" }}}}{lit(self.before[r])}'
                           f"{{{{ .Content }}}}{lit(self.after[r])}" for i, r in enumerate(ROLES)) + "{{ end }}"
        return f"{text}{{{{{' ' if text else '- '}range .Messages }}}}{body}{{{{ end }}}}{lit(self.generation)}"

    def _shared(self) -> tuple[str, str, str] | None:
        """(text before the role name, after it, after the content) when every role's turn is that pattern."""
        if len(set(self.after.values())) != 1:
            return None
        first = self.before["user"]
        if first.count("user") != 1:
            return None
        pre, mid = first.split("user")
        if all(self.before[r] == f"{pre}{r}{mid}" for r in ROLES):
            return pre, mid, self.after["user"]
        return None

    def stops(self, eos: str) -> list[str]:
        """Where generation must stop: the end of an assistant turn, EOS, and the start of any turn."""
        words = [eos, self.after["assistant"].strip(), *(self.before[r].strip() for r in ROLES)]
        return [w for w in dict.fromkeys(words) if w]


BOS = "\x02bos\x02"  # stands for the BOS token's text while probing: a template may spell the same text itself


def turns_of(template: str, bos: str = "<s>", eos: str = "</s>") -> Turns | str:
    """The template as `Turns`, or why it cannot be one (a sentence)."""
    turns = _probe(template, eos)
    if isinstance(turns, Turns):  # the BOS stand-in back to the BOS token's text
        for part in (turns.before, turns.after):
            part.update({role: text.replace(BOS, bos) for role, text in part.items()})
        turns.start, turns.default = turns.start.replace(BOS, bos), turns.default.replace(BOS, bos)
        turns.generation = turns.generation.replace(BOS, bos)
    return turns


def _probe(template: str, eos: str) -> Turns | str:
    """`Turns` read off renderings of one, two and three messages, checked on PROBES (BOS as a stand-in)."""
    from zephyr_train.data.chat_template import _environment

    bos = BOS
    try:
        compiled = _environment().from_string(template)

        def text(messages: list[dict], generation: bool = False) -> str:
            return compiled.render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=generation)

        system, user, assistant = ({"role": r, "content": f"\x01{r}\x01"} for r in ROLES)
        only_user = text([user])
        generation = text([user], True)
        pair = text([user, assistant])
        with_system = text([system, user])
    except Exception as err:  # noqa: BLE001 - a template that cannot render the probes
        return f"it does not render a plain system/user/assistant chat ({type(err).__name__}: {err})"
    if not generation.startswith(only_user) or not pair.startswith(only_user):
        return "its generation prompt or assistant turn does not follow the user turn unchanged"
    start = bos if with_system.startswith(bos) and only_user.startswith(bos) else ""

    def split(rendered: str, content: str) -> tuple[str, str]:
        if rendered.count(content) != 1:
            raise ValueError(content)
        head, tail = rendered.split(content)
        return head, tail

    try:
        head_s, rest = split(with_system[len(start):], system["content"])
        between, after_u = split(rest, user["content"])
        head_u, tail_u = split(only_user[len(start):], user["content"])
        _, tail_pair = split(pair[len(only_user):], assistant["content"])
        before_a = pair[len(only_user):].split(assistant["content"])[0]
    except ValueError:
        return "a message's content does not appear in it exactly once, unchanged"
    if tail_u != after_u:
        return "a user turn ends differently with and without a system turn before it"
    candidates = [(between[:i], between[i:]) for i in range(len(between) + 1) if head_u.endswith(between[i:])]
    for after_s, before_u in candidates:  # the longest user prefix first
        trial = Turns(start, head_u[:len(head_u) - len(before_u)], {"system": head_s, "user": before_u,
                      "assistant": before_a}, {"system": after_s, "user": tail_u, "assistant": tail_pair},
                      generation[len(only_user):])
        if all(trial.render(probe) == text(probe, True) for probe in PROBES):
            return trial
    return "the probe conversations render differently from any per-role template"


def modelfile(gguf_name: str, eos: str = "</s>", system: str | None = None, template: str | None = None,
              bos: str = "<s>") -> str:
    """The Modelfile: FROM, the chat template in Go-template syntax (Zephyr's when `template` is None) and its
    stop words."""
    from zephyr_train.data.chat_template import ZEPHYR

    turns = turns_of(template or ZEPHYR, bos, eos)
    lines = ["# Ollama: ollama create NAME -f THIS_FILE, then ollama run NAME (written by zephyr-train export)",
             f"FROM ./{gguf_name}"]
    if isinstance(turns, str):
        lines.append(f"# no TEMPLATE: the model's chat template cannot be written in Ollama's syntax: {turns}")
    else:
        lines.append(f'TEMPLATE """{turns.go()}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    stops = [eos] if isinstance(turns, str) else turns.stops(eos)
    lines += [f'PARAMETER stop "{word}"' for word in stops]
    return "\n".join(lines) + "\n"


def readme(target: Path, model_name: str) -> str:
    gguf_name = target.name
    modelfile_name = companion_paths(target)[0].name
    return f"""# {model_name} as GGUF: `{gguf_name}`

Written by `zephyr-train export`. The model's chat template is in the file (`tokenizer.chat_template`; for
Zephyr `<|system|>\\n...</s>\\n<|user|>\\n...</s>\\n<|assistant|>\\n`).

## llama.cpp

```bash
llama-server -m {gguf_name} --jinja -c 4096     # OpenAI-compatible server on :8080, the file's chat template
llama-cli -m {gguf_name} --jinja -cnv           # chat in the terminal
```

Keep `--jinja`: without it llama.cpp does not run the file's template but guesses a built-in format from its
text, and for Zephyr's template it guesses GLM-Edge's, which leaves out `</s>` and the newlines -- prompts
unlike those the model was trained on, and worse answers.

## Ollama

```bash
ollama create {model_name} -f {modelfile_name}
ollama run {model_name}
```

## LM Studio

```bash
lms import {gguf_name}                          # LM Studio's CLI
```

Or copy the file into `~/.lmstudio/models/<you>/{model_name}/` (My Models shows it).

LM Studio reads the chat template from the file; choose it in the model's prompt settings if it asks.
"""


def write_companions(work: Path, target: Path, model_name: str, eos: str = "</s>", template: str | None = None,
                     bos: str = "<s>") -> list[Path]:
    """The Modelfile and README under `work`, renamed into place by the caller with the GGUF; `template` is the
    chat template written into the GGUF (Zephyr's when None)."""
    paths = [work / path.name for path in companion_paths(target)]
    paths[0].write_text(modelfile(target.name, eos, template=template, bos=bos), encoding="utf-8")
    paths[1].write_text(readme(target, model_name), encoding="utf-8")
    return paths
