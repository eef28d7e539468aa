"""What goes beside a GGUF: an Ollama Modelfile and a README snippet for LM Studio, Ollama and llama-server.

Ollama does not read `tokenizer.chat_template` from a GGUF (LM Studio and `llama-server --jinja` do);
it needs the template in its own Go-template syntax, and stop words, or Zephyr's `</s>` and the next
`<|user|>` turn are printed and generation runs on. The TEMPLATE below renders each message as
`<|role|>\\ncontent</s>\\n` and ends with `<|assistant|>\\n`: the same text as the Zephyr Jinja template
with a generation prompt. The files are named after the GGUF (`OUT.Modelfile`, `OUT.README.md`), so
an f16 and a q8_0 export can share a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from zephyr_train.inference.source import ModelSource, final_model_of
from zephyr_train.run_files import RESOLVED_RECIPE
from zephyr_train.stages import KINDS

STOP_WORDS = ("<|system|>", "<|user|>", "<|assistant|>")


def companion_paths(target: Path) -> list[Path]:
    stem = target.with_suffix("")
    return [stem.with_name(stem.name + ".Modelfile"), stem.with_name(stem.name + ".README.md")]


def _eos(model_dir: Path) -> str:
    config = model_dir / "tokenizer_config.json"
    eos = json.loads(config.read_text()).get("eos_token") if config.exists() else None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos or "</s>"


def run_metadata(source: ModelSource) -> dict:
    """Name, license, base model and EOS text for the metadata, from the run's resolved recipe when there is one."""
    import yaml

    given = source.given
    name = given.name if final_model_of(given) else (
        f"{given.parent.name}-{given.name}" if (given / RESOLVED_RECIPE).exists() else given.name)
    meta: dict = {"name": name, "eos": _eos(source.adapter or source.path)}
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


def modelfile(gguf_name: str, eos: str = "</s>", system: str | None = None) -> str:
    lines = [
        "# Ollama: ollama create NAME -f THIS_FILE, then ollama run NAME (written by zephyr-train export)",
        f"FROM ./{gguf_name}",
        "TEMPLATE \"\"\"{{- range .Messages }}<|{{ .Role }}|>",
        "{{ .Content }}" + eos,
        "{{ end }}<|assistant|>",
        "\"\"\"",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{word}"' for word in (eos, *STOP_WORDS)]
    return "\n".join(lines) + "\n"


def readme(target: Path, model_name: str) -> str:
    gguf_name = target.name
    modelfile_name = companion_paths(target)[0].name
    return f"""# {model_name} as GGUF: `{gguf_name}`

Written by `zephyr-train export`. The Zephyr chat template is in the file (`tokenizer.chat_template`):
`<|system|>\\n...</s>\\n<|user|>\\n...</s>\\n<|assistant|>\\n`.

## llama.cpp

```bash
llama-server -m {gguf_name} --jinja -c 4096     # OpenAI-compatible server on :8080, the file's chat template
llama-cli -m {gguf_name} --jinja -cnv           # chat in the terminal
```

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


def write_companions(work: Path, target: Path, model_name: str, eos: str = "</s>") -> list[Path]:
    """The Modelfile and README under `work`, renamed into place by the caller with the GGUF."""
    paths = [work / path.name for path in companion_paths(target)]
    paths[0].write_text(modelfile(target.name, eos), encoding="utf-8")
    paths[1].write_text(readme(target, model_name), encoding="utf-8")
    return paths
