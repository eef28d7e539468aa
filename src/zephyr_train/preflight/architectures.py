"""The shape of a model, known without downloading or loading it, for the preflight memory estimate.

A 7B recipe must be checkable on a laptop with no Hub access, so the architecture of the models the
recipes name ships here (from their public config.json). A local model directory is read from its own
config.json, a Hub id already in the local cache from the cached one; anything else is unknown and the
estimate is skipped, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zephyr_train.data import builtin
from zephyr_train.data.sources import is_hub_id


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer in the Llama/Mistral family (GQA attention, SwiGLU MLP)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None  # when not hidden / heads (e.g. Mistral-Nemo)

    @property
    def q_size(self) -> int:
        return (self.head_dim or self.hidden_size // self.num_attention_heads) * self.num_attention_heads

    @property
    def kv_size(self) -> int:
        return self.q_size // self.num_attention_heads * self.num_key_value_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection in one layer, by the module names LoRA targets."""
        h, q, kv, i = self.hidden_size, self.q_size, self.kv_size, self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the LM head (one matrix when tied); bitsandbytes quantizes neither."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        return self.num_hidden_layers * self.layer_linear_params + self.embedding_params + norms


# mistralai/Mistral-7B-v0.1 config.json; Zephyr changes the weights only, never the shape.
MISTRAL_7B = Architecture(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768)
KNOWN = {
    "mistralai/Mistral-7B-v0.1": MISTRAL_7B,
    "HuggingFaceH4/mistral-7b-sft-beta": MISTRAL_7B,
    "HuggingFaceH4/zephyr-7b-beta": MISTRAL_7B,
    "alignment-handbook/zephyr-7b-sft-full": MISTRAL_7B,
    "alignment-handbook/zephyr-7b-sft-qlora": MISTRAL_7B,
}
_FIELDS = [name for name in Architecture.__dataclass_fields__]


def from_config(config: dict) -> Architecture | None:
    """An Architecture from a config.json mapping (a multimodal one's `text_config`), None if not this family."""
    config = config.get("text_config", config)
    try:
        values = {name: config[name] for name in _FIELDS if name in config}
        values.setdefault("num_key_value_heads", config["num_attention_heads"])
        values["tie_word_embeddings"] = bool(values.get("tie_word_embeddings"))
        return Architecture(**values)
    except (KeyError, TypeError):
        return None


def _cached_config(name: str, revision: str) -> dict | None:
    from huggingface_hub import try_to_load_from_cache  # no download, no torch

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    return json.loads(Path(found).read_text()) if isinstance(found, str) else None


def architecture_of(name: str, revision: str = "main") -> Architecture | None:
    """The model's shape from what ships with us or lies on disk; None when it would need a download."""
    if builtin.is_builtin(name):
        dims = builtin.MODELS.get(name.removeprefix(builtin.PREFIX))
        return Architecture(**dims, max_position_embeddings=builtin.MAX_POSITIONS) if dims else None
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return from_config(json.loads((path / "config.json").read_text()))
    if name in KNOWN:
        return KNOWN[name]
    config = _cached_config(name, revision) if is_hub_id(name) else None
    return from_config(config) if config else None
