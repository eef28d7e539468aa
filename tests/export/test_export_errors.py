"""`zephyr-train export` on bad input: one line, exit 2, before any model is loaded, nothing half-written
left behind; and which model a run, stage or adapter directory stands for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_user_error, cli


def fake_model(path: Path) -> Path:
    """Just the files `resolve` looks at (it reads no weights)."""
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (path / name).write_text("{}")
    return path


def test_resolve_run_stage_and_merged_dirs(tmp_path):
    from zephyr_train.inference.source import resolve

    run = tmp_path / "run"
    merged = fake_model(run / "dpo" / "merged")
    (run / "dpo" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(run / "sft")}))
    (run / "summary.json").write_text(json.dumps({"final_model": str(merged)}))
    assert resolve(run).path == merged  # a run directory: its final model
    assert resolve(run / "dpo").path == merged  # a LoRA stage: its merged model, not the adapter
    (run / "summary.json").write_text(json.dumps({"final_model": "runs/elsewhere/dpo/merged"}))  # a moved run
    assert resolve(run).path == merged
    plain = fake_model(tmp_path / "plain")
    assert resolve(plain).path == plain and not resolve(plain).needs_merge
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(plain)}))
    (adapter / "tokenizer_config.json").write_text("{}")
    source = resolve(adapter)
    assert source.needs_merge and source.base == str(plain)


def test_no_directory_and_no_model(tmp_path):
    out = str(tmp_path / "x.gguf")
    assert_user_error(cli("export", str(tmp_path / "missing"), "--gguf", out), "no such directory")
    assert_user_error(cli("export", str(tmp_path), "--gguf", out), "holds no model")
    assert list(tmp_path.iterdir()) == []


def test_adapter_without_its_base(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    assert_user_error(cli("export", str(adapter), "--gguf", str(tmp_path / "a.gguf")), "adapter_config.json",
                      "is not here", "zephyr-train merge")


def test_unknown_quant_and_bad_names(tiny_model_dir, tmp_path):
    assert_user_error(cli("export", str(tiny_model_dir), "--gguf", str(tmp_path / "m.gguf"), "--quant", "q3_x"),
                      "--quant q3_x: unknown quantization", "f16, q8_0, q4_k_m")
    assert_user_error(cli("export", str(tiny_model_dir), "--gguf", str(tmp_path / "m.bin")), "ending in .gguf")
    assert list(tmp_path.iterdir()) == []


def test_q4_k_m_says_when_no_quantizer_is_there(tiny_model_dir, tmp_path, monkeypatch):
    from zephyr_train.export import to_gguf

    monkeypatch.delenv("LLAMA_QUANTIZE", raising=False)  # a machine without llama.cpp in any form
    monkeypatch.setattr(to_gguf, "llama_quantize_binary", lambda: None)
    monkeypatch.setattr(to_gguf, "llama_cpp_library", lambda: None)
    done = cli("export", str(tiny_model_dir), "--gguf", str(tmp_path / "m.gguf"), "--quant", "q4_k_m")
    assert_user_error(done, "no Q4_K_M quantizer", "llama-quantize", "make llama-cpp", "--quant f16",
                      "--allow-requantize")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"precious")
    assert_user_error(cli("export", str(tiny_model_dir), "--gguf", str(out)), "exists; pass --overwrite")
    assert out.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    modelfile_only = tmp_path / "other"
    modelfile_only.mkdir()
    (modelfile_only / "n.Modelfile").write_text("mine")
    assert_user_error(cli("export", str(tiny_model_dir), "--gguf", str(modelfile_only / "n.gguf")), "n.Modelfile")


def test_failure_midway_leaves_nothing(tiny_model_dir, tmp_path):
    """A tensor llama.cpp has no name for is found while the file is being planned: no GGUF, no Modelfile,
    no temporary directory stays behind."""
    from safetensors.torch import load_file, save_file

    odd = tmp_path / "odd"
    shutil.copytree(tiny_model_dir, odd)
    tensors = load_file(odd / "model.safetensors")
    tensors["model.extra_gate.weight"] = tensors["model.norm.weight"].clone()
    save_file(tensors, odd / "model.safetensors", metadata={"format": "pt"})
    from zephyr_train.errors import UserError
    from zephyr_train.export.to_gguf import export

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UserError, match="model.extra_gate.weight has no llama.cpp name"):
        export(str(odd), str(out_dir / "odd.gguf"))
    assert list(out_dir.iterdir()) == []


def test_adapter_is_merged_then_exported(tiny_model_dir, tmp_path):
    """A LoRA adapter whose base is here: merged in a temporary directory, exported, the merge removed. The file
    holds the very tensors of the export of what `zephyr-train merge` makes of the adapter (the merged model computes
    what the adapter computes: tests/publish/test_tools.py; an export predicts what its model predicts:
    tests/export/test_gguf.py)."""
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zephyr_train.export.to_gguf import export
    from zephyr_train.inference.merge import merge_command

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    out = tmp_path / "out" / "lora.gguf"
    done = export(str(adapter), str(out), "f16")
    assert done.model_dir == adapter and sorted(p.name for p in out.parent.iterdir()) == [
        "lora.Modelfile", "lora.README.md", "lora.gguf"]
    merged = merge_command(str(adapter), str(tmp_path / "merged"), "float32")

    def read(path):
        return {t.name: t.data for t in GGUFReader(path).tensors}

    tensors = read(out)
    want = read(export(str(merged), str(tmp_path / "ref" / "m.gguf"), "f16").path)
    base = read(export(str(tiny_model_dir), str(tmp_path / "base" / "b.gguf"), "f16").path)
    assert len(tensors) == done.tensors and set(tensors) == set(want)
    assert all(np.array_equal(tensors[name], want[name]) for name in want)
    assert not np.array_equal(tensors["blk.0.attn_q.weight"], base["blk.0.attn_q.weight"])  # the adapter is in


FAKE_QUANTIZE = """#!/bin/sh
# stands in for llama.cpp's llama-quantize: records its arguments, then copies or fails
echo "$@" > "$(dirname "$0")/args"
[ "$3" = Q4_K_M ] && [ -z "$FAIL" ] && cp "$1" "$2" && exit 0
echo "error: cannot quantize" >&2; exit 3
"""


def test_q4_k_m_hands_an_f16_file_to_llama_quantize(tiny_model_dir, tmp_path, monkeypatch):
    """The hand-over to a `llama-quantize` binary: a stand-in script, to check what it is given and that its
    failure leaves nothing behind. Real llama.cpp quantizes in tests/export/test_llama_cpp.py."""
    from gguf import GGUFReader

    from zephyr_train.errors import UserError
    from zephyr_train.export.to_gguf import export

    fake = tmp_path / "bin" / "llama-quantize"
    fake.parent.mkdir()
    fake.write_text(FAKE_QUANTIZE)
    fake.chmod(0o755)
    monkeypatch.setenv("LLAMA_QUANTIZE", str(fake))
    out = tmp_path / "out" / "m.gguf"
    done = export(str(tiny_model_dir), str(out), "q4_k_m")
    source, target, kind = (fake.parent / "args").read_text().split()
    assert Path(source).name == "f16.gguf" and Path(target).name == "m.gguf" and kind == "Q4_K_M"
    assert "llama-quantize" in done.notes[-1] and len(GGUFReader(out).tensors) == done.tensors
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(UserError, match="failed on f16.gguf .exit 3.: error: cannot quantize"):
        export(str(tiny_model_dir), str(tmp_path / "out2" / "m.gguf"), "q4_k_m")
    assert list((tmp_path / "out2").iterdir()) == []
