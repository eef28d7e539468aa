"""`zephyr-train export MODEL_DIR --gguf OUT.gguf --quant f16|q8_0|q4_k_m`: one GGUF file for llama.cpp,
LM Studio and Ollama, written with llama.cpp's own Python library (`gguf`).

Mistral-7B is llama.cpp's `llama` architecture (its converter maps MistralForCausalLM there): the
same keys and tensor names (`blk.N.attn_q.weight`, ... from gguf's tensor-name map). Two layout facts:
- rotary embedding: transformers rotates the two halves of each head (`rotate_half`), llama.cpp's
  normal RoPE rotates adjacent pairs, so the rows of q_proj and k_proj are interleaved per head
  (k_proj with the KV head count); transformers' GGUF loader undoes exactly this;
- llama.cpp's `llama` graph has no sliding window: Mistral-7B's 4096-token window is lost beyond 4096
  tokens of context, as in every GGUF of it.
Weights stream one tensor at a time from the safetensors files into the output (header first, then
each tensor converted and written), so memory follows the largest tensor, not the model: 1.6 GB peak
RSS for a 0.7B model of Mistral-7B's widths (its 32000 x 4096 embedding, in bf16, fp32 and f16 at
once, plus torch), which a 7B model shares -- not the 14.5 GB of its weights. 1-D tensors (norms)
stay float32 as llama.cpp keeps them; q8_0 quantizes every 2-D tensor whose rows are a multiple of 32
(else f16). q4_k_m needs a K-quant quantizer (gguf 0.19 only dequantizes K-quants): llama.cpp's own,
run on an f16 file we write first -- `$LLAMA_QUANTIZE` when set, else llama-cpp-python's
`llama_model_quantize` (the library call `llama-quantize` makes; `make llama-cpp` builds it), else
`llama-quantize` on PATH.
Everything is written under temporary names and renamed at the end: an interrupted export leaves
neither half a GGUF nor a Modelfile for a file that is not there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr_train.data.chat_template import ZEPHYR
from zephyr_train.errors import UserError
from zephyr_train.export import ollama
from zephyr_train.export.tokenizer_vocab import add_to_writer, read_vocab
from zephyr_train.inference import source as sources

QUANTS = ("f16", "q8_0", "q4_k_m")
ARCHITECTURES = ("MistralForCausalLM", "LlamaForCausalLM")
QK = 32  # block size of q8_0 (and of llama.cpp's legacy quants): rows must be a multiple of it


@dataclass
class Exported:
    path: Path
    quant: str
    size: int
    seconds: float
    tensors: int
    model_dir: Path
    companions: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_quant(quant: str) -> str:
    name = quant.lower()
    if name not in QUANTS:
        raise UserError(f"--quant {quant}: unknown quantization; choose one of {', '.join(QUANTS)}")
    return name


def gguf_can_quantize(kind: str) -> bool:
    """Whether the installed gguf package implements the quantizer `kind` (e.g. "Q4_K")."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    try:
        quants.quantize(np.zeros((1, 256), dtype=np.float32), GGMLQuantizationType[kind])
        return True
    except NotImplementedError:
        return False


def llama_quantize_binary() -> str | None:
    return os.environ.get("LLAMA_QUANTIZE") or shutil.which("llama-quantize")


def llama_cpp_library() -> Any | None:
    """llama-cpp-python's bindings to llama.cpp (`make llama-cpp`), or None when they are not installed."""
    try:
        import llama_cpp
    except (ImportError, OSError):  # OSError: the package is there but its libllama does not load
        return None
    return llama_cpp


def quiet_llama_cpp(llama_cpp: Any) -> None:
    """llama.cpp logs every tensor it quantizes or loads; llama-cpp-python passes its log to the Python logger
    `llama-cpp-python`, which then prints errors only."""
    import logging

    del llama_cpp  # imported: its log callback is installed
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def q4_k_m_route() -> str:
    """'llama-quantize' (a binary: $LLAMA_QUANTIZE, else on PATH), 'llama-cpp-python' (its library call), or a
    UserError saying why there is no Q4_K_M here: a K-quant is never faked with another type.

    gguf 0.19 has no K-quant quantizer (its Q4_K/Q6_K classes only dequantize), so a gguf route cannot be
    built and tested today; a gguf release that adds one is named in the message rather than used unchecked.
    """
    from importlib.metadata import version

    binary = llama_quantize_binary()
    if binary and not (shutil.which(binary) or (Path(binary).is_file() and os.access(binary, os.X_OK))):
        raise UserError(f"--quant q4_k_m: $LLAMA_QUANTIZE is {binary}, which is not an executable file; point it "
                        "at llama.cpp's llama-quantize, or unset it to use the one on PATH")
    if os.environ.get("LLAMA_QUANTIZE"):
        return "llama-quantize"
    if llama_cpp_library() is not None:
        return "llama-cpp-python"
    if binary:
        return "llama-quantize"
    gguf_version = version("gguf")
    if gguf_can_quantize("Q4_K") and gguf_can_quantize("Q6_K"):
        why = f"gguf {gguf_version} has a K-quant quantizer, which this exporter has not been checked against"
    else:
        why = f"the installed gguf {gguf_version} only dequantizes K-quants"
    raise UserError(f"--quant q4_k_m: no Q4_K_M quantizer here: {why}, llama-cpp-python is not installed (`make "
                    "llama-cpp`) and llama.cpp's llama-quantize is not on PATH (nor $LLAMA_QUANTIZE); install one, "
                    "or export --quant f16 and run "
                    "`llama-quantize OUT.gguf OUT-Q4_K_M.gguf Q4_K_M` (from f16: llama.cpp refuses to requantize "
                    "q8_0 without --allow-requantize)")


def check_out(out: str | Path, overwrite: bool) -> Path:
    path = Path(out)
    if path.suffix != ".gguf":
        raise UserError(f"--gguf {out}: give a file name ending in .gguf")
    if path.is_dir():
        raise UserError(f"--gguf {out}: is a directory; give a file name ending in .gguf")
    if path.exists() and not overwrite:
        raise UserError(f"--gguf {out}: exists; pass --overwrite to replace it, or give another name")
    return path


# The other families `check` knows: what llama.cpp's converter writes for them that this exporter does not
OTHER_GRAPHS = {
    "Qwen2ForCausalLM": "llama.cpp's qwen2 graph (q/k/v biases)",
    "Gemma2ForCausalLM": "llama.cpp's gemma2 graph (RMSNorm weights + 1, embedding scale, logit soft-capping, "
                         "alternating sliding window)",
    "Gemma3ForCausalLM": "llama.cpp's gemma3 graph (RMSNorm weights + 1, q/k norms, embedding scale, sliding window)",
    "Phi3ForCausalLM": "llama.cpp's phi3 graph (fused qkv and gate_up projections)",
    "MixtralForCausalLM": "llama.cpp's expert tensors (ffn_*_exps) and expert counts",
}


def read_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in ARCHITECTURES:
        needs = f": it needs {OTHER_GRAPHS[arch]}, which this exporter does not write" if arch in OTHER_GRAPHS else ""
        raise UserError(f"{model_dir / 'config.json'}: architecture {arch}{needs}; GGUF export knows "
                        f"{' and '.join(ARCHITECTURES)} (llama.cpp's llama graph); convert it with llama.cpp's "
                        "convert_hf_to_gguf.py")
    return config


def rope_parameters(config: dict) -> dict:
    """RoPE settings as transformers 5 saves them (`rope_parameters`), or as older configs did (`rope_theta`,
    `rope_scaling`): SmolLM2's theta 1e5 and Llama-3's 5e5 were written as 10000 when only the old key was read."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    return rope


def check_rope(config: dict, model_dir: Path) -> None:
    """RoPE variants llama.cpp reads from metadata are written; the others are refused before any writing."""
    kind = rope_parameters(config)["rope_type"]
    if kind not in ("default", "linear", "yarn"):
        raise UserError(f"{model_dir / 'config.json'}: rope_type {kind} needs per-dimension frequency factors "
                        "(llama.cpp's rope_freqs tensor), which this exporter does not write; convert this model "
                        "with llama.cpp's convert_hf_to_gguf.py")


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / name for name in names]
    return [model_dir / "model.safetensors"]


def to_llama_cpp_rope(weight: Any, heads: int) -> Any:
    """Rows of q_proj/k_proj from transformers' half-split RoPE layout to llama.cpp's adjacent pairs:
    per head, row i of the first half and row i of the second half become rows 2i and 2i+1."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _ggml_type(shape: tuple[int, ...], quant: str) -> Any:
    from gguf import GGMLQuantizationType as T

    if len(shape) == 1:
        return T.F32
    if quant == "q8_0" and shape[-1] % QK == 0:
        return T.Q8_0
    return T.F16


def _write_metadata(writer: Any, config: dict, name: str, license_: str | None, base_model: str | None,
                    quant: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    if license_:
        writer.add_license(license_)
    if base_model:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, base_model)
        if "/" in base_model and not Path(base_model).exists():
            writer.add_base_model_repo_url(0, f"https://huggingface.co/{base_model}")
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:  # llama.cpp assumes hidden / heads unless told
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope["rope_type"] in ("linear", "yarn"):
        kind = gguf.RopeScalingType.LINEAR if rope["rope_type"] == "linear" else gguf.RopeScalingType.YARN
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        if rope.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(config["vocab_size"])
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_k_m": gguf.LlamaFileType.MOSTLY_F16}[quant]  # q4_k_m: llama-quantize sets its own
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_gguf(model_dir: Path, target: Path, quant: str, name: str, license_: str | None,
               base_model: str | None) -> tuple[int, list[str], str]:
    """Write `model_dir` as a GGUF at `target`; returns (tensor count, notes, chat template)."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open


    config = read_config(model_dir)
    check_rope(config, model_dir)
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    vocab = read_vocab(model_dir, config["vocab_size"])

    plan = []  # (file, hf name, gguf name, shape, type)
    for file in weight_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                new = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise UserError(f"{file}: tensor {key} has no llama.cpp name; is this a plain Mistral/Llama model?")
                shape = tuple(handle.get_slice(key).get_shape())
                plan.append((file, key, new, shape, _ggml_type(shape, quant)))

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _write_metadata(writer, config, name, license_, base_model, quant)
    template = add_to_writer(writer, vocab, ZEPHYR)
    for _, _, new, shape, kind in plan:
        if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if kind == gguf.GGMLQuantizationType.F32 else np.float16
            writer.add_tensor_info(new, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, kind)
            writer.add_tensor_info(new, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=kind)
    try:
        writer.write_header_to_file(path=target)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles: dict[Path, Any] = {}
        for file, key, _, _, kind in plan:
            if file not in handles:
                handles.clear()  # one shard open at a time
                handles[file] = safe_open(str(file), framework="pt")
            data = handles[file].get_tensor(key).to(torch.float32).numpy()
            if key.endswith("q_proj.weight"):
                data = to_llama_cpp_rope(data, heads)
            elif key.endswith("k_proj.weight"):
                data = to_llama_cpp_rope(data, kv_heads)
            writer.write_tensor_data(gguf.quants.quantize(data, kind))
    finally:
        writer.close()
    return len(plan), vocab.notes, template


def _quantize_with_llama_cpp(f16: Path, target: Path, route: str) -> None:
    if route == "llama-cpp-python":
        import ctypes

        llama_cpp = llama_cpp_library()
        quiet_llama_cpp(llama_cpp)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        params.nthread = os.cpu_count() or 1
        code = llama_cpp.llama_model_quantize(str(f16).encode(), str(target).encode(), ctypes.byref(params))
        if code != 0:
            raise UserError(f"llama.cpp's llama_model_quantize failed on {f16.name} (returned {code})")
        return
    binary = llama_quantize_binary()
    done = subprocess.run([binary, str(f16), str(target), "Q4_K_M"], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"{binary} failed on {f16.name} (exit {done.returncode}): {tail[0]}")


def export(model_dir: str, out: str, quant: str = "f16", overwrite: bool = False, name: str | None = None,
           license_: str | None = None, base_model: str | None = None) -> Exported:
    """Checks everything a user can get wrong first (no model loaded), then writes under temp names."""

    quant = check_quant(quant)
    target = check_out(out, overwrite)
    companions = ollama.companion_paths(target)
    for path in companions:
        if path.exists() and not overwrite:
            raise UserError(f"{path}: exists; pass --overwrite to replace it and {target.name}")
    source = sources.resolve(model_dir)
    if source.needs_merge is False:
        check_rope(read_config(source.path), source.path)
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise UserError("export needs llama.cpp's gguf package: pip install 'zephyr-train[export]'") from err
    route = q4_k_m_route() if quant == "q4_k_m" else None
    meta = ollama.run_metadata(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model_path = sources.merge_if_needed(source, work / "merged")
        written = work / ("f16.gguf" if quant == "q4_k_m" else target.name)
        count, notes, template = write_gguf(model_path, written, quant, name or meta["name"],
                                     license_ or meta.get("license"), base_model or meta.get("base_model"))
        if quant == "q4_k_m":
            _quantize_with_llama_cpp(written, work / target.name, route)
            written = work / target.name
            how = "llama-cpp-python's llama_model_quantize" if route == "llama-cpp-python" else "llama-quantize"
            notes.append(f"quantized to Q4_K_M by llama.cpp ({how})")
        files = ollama.write_companions(work, target, name or meta["name"], meta["eos"], template, meta["bos"])
        written.replace(target)
        for tmp, final in zip(files, companions, strict=True):
            tmp.replace(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    return Exported(target, quant, target.stat().st_size, seconds, count, source.adapter or source.path,
                    companions, notes)
