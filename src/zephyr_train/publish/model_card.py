"""The model card that goes with every push, made with huggingface_hub's `ModelCard`/`ModelCardData`.

A card is written from the resolved (secret-free) recipe and the stage's summary.json, never from the
environment, and `scrub` masks any secret value that slipped into a free-text field anyway. The
metadata holds only what the Hub's validator accepts: `base_model` and `datasets` are Hub ids (a
local or built-in model or dataset is named in the text instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import Recipe, to_dict
from zephyr_train.config.secrets import scrub
from zephyr_train.data.chat_template import resolve
from zephyr_train.data.sources import is_builtin, is_hub_id
from zephyr_train.eval.report_section import card_rows as eval_rows
from zephyr_train.preflight import environment

STAGE_TITLES = {
    "sft": "distilled supervised fine-tuning (dSFT, Zephyr stage 1)",
    "dpo": "distilled direct preference optimization (dDPO, Zephyr stage 2)",
}
KINDS = {"model": "full fine-tuned model", "adapter": "LoRA adapter", "merged": "LoRA adapter merged into its base"}

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

This {{ kind_text }} is the result of {{ stage_title }} of
{% if base %}[{{ base }}](https://huggingface.co/{{ base }}){% else %}`{{ base_text }}`{% endif %}, trained with
zephyr-train (SFT then DPO over TRL, from one YAML recipe) the way
[Zephyr-7B](https://huggingface.co/HuggingFaceH4/zephyr-7b-beta) was made (Tunstall et al., 2023, arXiv 2310.16944).
{% if in_progress %}
**Training in progress**: this push is the checkpoint at step {{ in_progress }}; the final model replaces it.
{% endif %}

## Training data

| dataset | split | rows used |
|---|---|---|
{% for d in data %}| {{ d.path }} | {{ d.split }} | {{ d.taken }} |
{% endfor %}

## How to use

```python
# pip install transformers accelerate{% if adapter %} peft{% endif %}
import torch
from transformers import pipeline

pipe = pipeline("text-generation", model="{{ local or repo_id }}", torch_dtype=torch.bfloat16, device_map="auto")
messages = [
    {"role": "system", "content": "You are a friendly chatbot."},
    {"role": "user", "content": "How many helicopters can a human eat in one sitting?"},
]
prompt = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
outputs = pipe(prompt, max_new_tokens=256, do_sample=True, temperature=0.7, top_k=50, top_p=0.95)
print(outputs[0]["generated_text"])
```
{% if adapter %}
The adapter loads on its base `{{ base or base_text }}`{% if relative_base %}, a path relative to the run folder: load
it from there (`cd` into the run folder, then `AutoPeftModelForCausalLM.from_pretrained("{{ stage }}")`), or use the
merged model in `{{ stage }}/merged`{% endif %}; `zephyr-train merge` turns it into a plain model.
{% endif %}{% if builtin %}
**A built-in test model** (`{{ builtin }}`, randomly initialised, ~2M parameters): it exists to test the pipeline
end to end on a CPU. Its answers are gibberish, as expected; only the figures' trends mean anything.
{% endif %}
Or in a terminal: `zephyr-train chat MODEL_DIR --system "You are a friendly chatbot."`.

### Chat template

Each message renders as `<|role|>` on its own line, the content, then the EOS token `</s>`; a
generation prompt ends with `<|assistant|>`. For a system prompt S and a user message U the model sees:

```
<|system|>
S</s>
<|user|>
U</s>
<|assistant|>
```

The tokenizer's encoding adds one BOS token in front; render the text with `apply_chat_template(...,
tokenize=False)` and encode it as above, so no BOS is doubled. The template shipped with the tokenizer:

```jinja
{{ chat_template }}
```

## Training procedure

Stage: {{ stage_title }}.{% if stage == "dpo" %} Preference pairs are ranked by AI feedback (UltraFeedback-style); no
human labels and no RL sampling.{% endif %}

### Hyperparameters

| setting | value |
|---|---|
{% for key, value in hyperparameters %}| {{ key }} | {{ value }} |
{% endfor %}
{% if lora %}
LoRA: {% for key, value in lora %}{{ key }}={{ value }}{% if not loop.last %}, {% endif %}{% endfor %}.
{% endif %}

### Results

{% if results %}| metric | value |
|---|---|
{% for key, value in results %}| {{ key }} | {{ value }} |
{% endfor %}{% else %}No results yet: training has not finished.{% endif %}

## Intended uses and limitations

A research model for studying chat alignment from distilled AI feedback: evaluating, comparing, and
building on the Zephyr recipe. It is not a product and not safe for direct deployment.

## Bias, risks and limitations

This model has not been aligned to human preferences for safety, with RLHF or otherwise, and has no
in-the-loop filtering of its answers: it can produce harmful, biased, false or otherwise problematic
text, especially when asked to. {% if stage == "sft" %}This is the SFT stage alone: it imitates the
assistant answers in its data and has had no preference tuning at all. {% endif %}Its training data were
generated by other language models (UltraChat / UltraFeedback-style distillation), whose errors and biases
it inherits. Check its outputs before relying on them.

## Framework versions

{% for name, version in versions %}- {{ name }} {{ version }}
{% endfor %}"""


def hub_id(name: str | None) -> str | None:
    """`name` when it can only be a Hub id (not built-in, not a local path), else None."""
    return name if is_hub_id(name) else None


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def hyperparameters(recipe: Recipe, stage: str) -> tuple[list, list]:
    """(trainer settings, LoRA settings) of the stage, as the resolved recipe records them."""
    section = dict(to_dict(recipe)[stage])
    for key in ("datasets", "eval"):
        section.pop(key, None)
    lora = section.pop("lora", None) or {}
    return [(k, _cell(v)) for k, v in section.items()], [(k, _cell(v)) for k, v in lora.items()]


def results(summary: dict | None) -> list[tuple[str, str]]:
    if not summary:
        return []
    rows = [("final train loss", summary.get("train_loss_last")), ("mean train loss", summary.get("train_loss_mean")),
            ("eval loss", summary.get("eval_loss")), ("steps", summary.get("global_step")),
            ("epochs", summary.get("epochs")), ("train runtime (s)", summary.get("train_runtime_s"))]
    before, after = summary.get("held_out_before") or {}, summary.get("held_out_after") or {}
    for key, label in (("accuracy", "held-out preference accuracy"), ("margin", "held-out reward margin"),
                       ("loss", "held-out DPO loss")):
        if after.get(key) is not None:
            start = f"{_cell(before[key])} -> " if before.get(key) is not None else ""
            rows.append((f"{label} (before -> after)" if start else label, start + _cell(after[key])))
    return [(k, _cell(v)) for k, v in rows if v is not None]


CARD_PACKAGES = ("zephyr-train", "transformers", "trl", "peft", "torch", "datasets", "huggingface_hub")


def versions() -> list[tuple[str, str]]:
    """The framework versions a card lists: those of `environment.versions` that are installed."""
    return [(name, version) for name, version in environment.versions(CARD_PACKAGES).items()
            if version != environment.NOT_INSTALLED]


def make_card(recipe: Recipe, stage: str, repo_id: str, kind: str, base: str | None, base_text: str,
              summary: dict | None, in_progress: int | None = None, local: str | None = None) -> Any:
    """The `ModelCard` for one push, or with `local` (the folder's path) for a run folder. `kind` is model,
    adapter or merged; `base` the base's Hub id, if any; `base_text` how to name it otherwise."""
    from huggingface_hub import ModelCard, ModelCardData

    spec = recipe.stage(stage)
    datasets = [hub_id(d.path) for d in spec.datasets]
    tags = ["zephyr-train", "trl", stage, "alignment-handbook", "generated_from_trainer"]
    if kind == "adapter":
        tags += ["lora", "peft"]
    data = ModelCardData(
        license=recipe.hub.license if recipe.hub else "apache-2.0",
        base_model=base, datasets=[d for d in datasets if d] or None, tags=tags,
        library_name="peft" if kind == "adapter" else "transformers", pipeline_tag="text-generation",
        model_name=repo_id.split("/")[-1],
    )
    sources = (summary or {}).get("data", {}).get("sources") or [
        {"path": d.path, "split": d.split, "taken": "?"} for d in spec.datasets]
    trainer, lora = hyperparameters(recipe, stage)
    card = ModelCard.from_template(
        data, template_str=TEMPLATE, model_name=repo_id.split("/")[-1], repo_id=repo_id, kind_text=KINDS[kind],
        stage=stage, stage_title=STAGE_TITLES[stage], base=base, base_text=base_text, adapter=kind == "adapter",
        data=sources, chat_template=resolve(recipe.chat_template, recipe.source, recipe.model, download=True)[0],
        hyperparameters=trainer, lora=lora, results=results(summary) + eval_rows(recipe.output_dir, stage),
        versions=versions(), in_progress=in_progress, local=local,
        relative_base=not base and not Path(base_text).is_absolute() and not is_builtin(base_text),
        builtin=recipe.model.name_or_path if is_builtin(recipe.model.name_or_path) else None,
    )
    return ModelCard(scrub(str(card)))
