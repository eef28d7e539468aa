"""The shape of a model, known without downloading or loading it, for the preflight memory estimate.

A 7B recipe must be checkable on a laptop with no Hub access, so the architecture of the bases people
apply the Zephyr recipe to ships here, numbers copied from each model's published config.json
(Mistral-7B, Llama-3/3.1-8B, Qwen2.5-0.5B/7B, Gemma-7B, Gemma-2-9B, Phi-3-mini, SmolLM2-135M, Mixtral-8x7B,
Mixtral-8x22B). A local model
directory is read from its own config.json, a Hub id already in the local cache from the cached one;
anything else is unknown and the estimate is skipped, never guessed. What changes the memory between
these families is read from the config too: grouped-query attention (`num_key_value_heads`), a head
size that is not hidden / heads (Gemma-2: 256), tied input and output embeddings (Gemma, small Qwen),
the vocabulary (32k for Mistral, 152k Qwen, 256k Gemma: at 2048 tokens the logits alone differ 8x),
fused projections (Phi-3's `qkv_proj`/`gate_up_proj`) and mixture-of-experts MLPs (Mixtral's
`num_local_experts`, Qwen-MoE's `num_experts` with `moe_intermediate_size` and a shared expert): all
experts' weights are held, only `num_experts_per_tok` of them compute each token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from zephyr_train.data import builtin, packaged
from zephyr_train.data.sources import PREFIX, is_builtin, is_hub_id

MLP = ("gate_proj", "up_proj", "down_proj")
# Families whose config class ties the LM head to the input embeddings when config.json does not say.
TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3_text", "gemma3"}
FUSED = {"phi3"}  # one qkv_proj and one gate_up_proj per layer


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer (GQA attention, gated MLP, optionally mixture-of-experts)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None  # when not hidden / heads (e.g. Gemma-2, Mistral-Nemo)
    model_type: str = "mistral"
    num_experts: int = 0  # 0: a dense MLP
    num_experts_per_tok: int = 0
    moe_intermediate_size: int | None = None  # each expert's width when it differs from intermediate_size
    shared_expert_intermediate_size: int = 0  # Qwen-MoE's always-on expert

    @property
    def q_size(self) -> int:
        return (self.head_dim or self.hidden_size // self.num_attention_heads) * self.num_attention_heads

    @property
    def kv_size(self) -> int:
        return self.q_size // self.num_attention_heads * self.num_key_value_heads

    @property
    def expert_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection in one layer (one expert's for MoE MLPs), by the module names LoRA targets."""
        h, q, kv, i = self.hidden_size, self.q_size, self.kv_size, self.expert_size
        if self.model_type in FUSED:
            return {"qkv_proj": (h, q + 2 * kv), "o_proj": (q, h), "gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def copies(self, name: str) -> int:
        """How many of projection `name` one layer holds: every expert has its own MLP."""
        return self.num_experts if self.num_experts and name in MLP + ("gate_up_proj",) else 1

    @property
    def layer_linear_params(self) -> int:
        shared = 3 * self.hidden_size * self.shared_expert_intermediate_size
        router = self.hidden_size * self.num_experts
        return sum(a * b * self.copies(n) for n, (a, b) in self.linear_shapes().items()) + shared + router

    @property
    def active_intermediate(self) -> int:
        """MLP width one token passes through: its top-k experts (plus the shared one), or the dense MLP."""
        if not self.num_experts:
            return self.intermediate_size
        return self.expert_size * self.num_experts_per_tok + self.shared_expert_intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the LM head (one matrix when tied); bitsandbytes quantizes neither."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        return self.num_hidden_layers * self.layer_linear_params + self.embedding_params + norms


def lora_target_problem(arch: Architecture, targets: list | str, where: str) -> str | None:
    """Why a LoRA `target_modules` list would match nothing in this model (PEFT says so only after loading):
    Phi-3 fuses q/k/v and gate/up, so Mistral's seven names find just o_proj and down_proj there."""
    if isinstance(targets, str) and targets != "all-linear":
        return None  # PEFT reads a string as a regex over module names: not judged here
    names = [targets] if isinstance(targets, str) else list(targets or [])
    shapes = arch.linear_shapes()
    if "all-linear" in names or not names or any(n in shapes for n in names):
        missing = [n for n in names if n not in shapes and n != "all-linear" and n.endswith("_proj")]
        if not missing or arch.model_type not in FUSED:
            return None
        return (f"{where}.target_modules names {', '.join(missing)}, which {arch.model_type} does not have (its "
                f"projections: {', '.join(shapes)}); target those, or all-linear")
    return (f"{where}.target_modules ({', '.join(names)}) match no projection of this {arch.model_type} model "
            f"(it has {', '.join(shapes)}); target those, or all-linear")


def _arch(**kw: int | bool | str) -> Architecture:
    return Architecture(**kw)  # type: ignore[arg-type]


# mistralai/Mistral-7B-v0.1 config.json; Zephyr changes the weights only, never the shape.
MISTRAL_7B = _arch(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768)
LLAMA_3_8B = _arch(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, model_type="llama")
LLAMA_31_8B = _arch(**{**LLAMA_3_8B.__dict__, "max_position_embeddings": 131072})
QWEN25_7B = _arch(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072, model_type="qwen2")
QWEN25_05B = _arch(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
                   model_type="qwen2")
GEMMA2_9B = _arch(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=256, vocab_size=256000, max_position_embeddings=8192,
                  tie_word_embeddings=True, model_type="gemma2")
PHI3_MINI = _arch(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, model_type="phi3")
MIXTRAL_8X7B = _arch(**{**MISTRAL_7B.__dict__, "model_type": "mixtral", "num_experts": 8, "num_experts_per_tok": 2})
# mistral-community/Mixtral-8x22B-v0.1 (the handbook's zephyr-141b-A35b base; mistralai's own has a 32768 vocabulary)
MIXTRAL_8X22B = _arch(hidden_size=6144, intermediate_size=16384, num_hidden_layers=56, num_attention_heads=48,
                      num_key_value_heads=8, vocab_size=32000, max_position_embeddings=65536, model_type="mixtral",
                      num_experts=8, num_experts_per_tok=2)
GEMMA_7B = _arch(hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=16, head_dim=256, vocab_size=256000, max_position_embeddings=8192,
                 tie_word_embeddings=True, model_type="gemma")
SMOLLM2_135M = _arch(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True,
                     model_type="llama")

KNOWN = {
    "mistralai/Mistral-7B-v0.1": MISTRAL_7B,
    "HuggingFaceH4/mistral-7b-sft-beta": MISTRAL_7B,
    "HuggingFaceH4/zephyr-7b-beta": MISTRAL_7B,
    "alignment-handbook/zephyr-7b-sft-full": MISTRAL_7B,
    "alignment-handbook/zephyr-7b-sft-qlora": MISTRAL_7B,
    "meta-llama/Meta-Llama-3-8B": LLAMA_3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": LLAMA_3_8B,
    "meta-llama/Llama-3.1-8B": LLAMA_31_8B,
    "meta-llama/Llama-3.1-8B-Instruct": LLAMA_31_8B,
    "meta-llama/Meta-Llama-3.1-8B": LLAMA_31_8B,
    "Qwen/Qwen2.5-7B": QWEN25_7B,
    "Qwen/Qwen2.5-7B-Instruct": _arch(**{**QWEN25_7B.__dict__, "max_position_embeddings": 32768}),
    "Qwen/Qwen2.5-0.5B": QWEN25_05B,
    "Qwen/Qwen2.5-0.5B-Instruct": QWEN25_05B,
    "google/gemma-2-9b": GEMMA2_9B,
    "google/gemma-2-9b-it": GEMMA2_9B,
    "microsoft/Phi-3-mini-4k-instruct": PHI3_MINI,
    "microsoft/Phi-3-mini-128k-instruct": _arch(**{**PHI3_MINI.__dict__, "max_position_embeddings": 131072}),
    "mistralai/Mixtral-8x7B-v0.1": MIXTRAL_8X7B,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": MIXTRAL_8X7B,
    "mistral-community/Mixtral-8x22B-v0.1": MIXTRAL_8X22B,
    "HuggingFaceH4/zephyr-orpo-141b-A35b-v0.1": MIXTRAL_8X22B,
    "mistralai/Mixtral-8x22B-v0.1": _arch(**{**MIXTRAL_8X22B.__dict__, "vocab_size": 32768}),
    "google/gemma-7b": GEMMA_7B,
    "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1": GEMMA_7B,
    "HuggingFaceTB/SmolLM2-135M": SMOLLM2_135M,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2_135M,
}
_FIELDS = [f.name for f in fields(Architecture)]
# config.json spellings of the same facts in other families
_SYNONYMS = {"num_local_experts": "num_experts", "n_routed_experts": "num_experts"}


def from_config(config: dict) -> Architecture | None:
    """An Architecture from a config.json mapping (a multimodal one's `text_config`), None if not this family."""
    config = config.get("text_config", config)
    config = {_SYNONYMS.get(k, k): v for k, v in config.items()}
    try:
        values = {name: config[name] for name in _FIELDS if config.get(name) is not None}
        values.setdefault("num_key_value_heads", config["num_attention_heads"])
        model_type = str(config.get("model_type") or "mistral")
        values["model_type"] = model_type
        values["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", model_type in TIED_BY_DEFAULT))
        return Architecture(**values)
    except (KeyError, TypeError):
        return None


def _cached_config(name: str, revision: str) -> dict | None:
    from huggingface_hub import try_to_load_from_cache  # no download, no torch

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    return json.loads(Path(found).read_text()) if isinstance(found, str) else None


def architecture_of(name: str, revision: str = "main") -> Architecture | None:
    """The model's shape from what ships with us or lies on disk; None when it would need a download."""
    if is_builtin(name):
        key = name.removeprefix(PREFIX)
        if key in packaged.PACKAGED:
            return Architecture(**packaged.PACKAGED[key].dims)
        dims = builtin.MODELS.get(key)
        return Architecture(**dims, max_position_embeddings=builtin.MAX_POSITIONS) if dims else None
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return from_config(json.loads((path / "config.json").read_text()))
    if name in KNOWN:
        return KNOWN[name]
    config = _cached_config(name, revision) if is_hub_id(name) else None
    return from_config(config) if config else None
