"""What llama.cpp reads for RoPE is what the model uses: transformers 5's `rope_parameters` (theta 1e5 for
SmolLM2, 1e6 for Mistral v0.2), linear/YaRN scaling, a head_dim that is not hidden/heads; what it cannot
read from metadata (Llama-3's frequency factors) is refused before a byte is written. A $LLAMA_QUANTIZE
that is not there is one line, before the f16 file is written."""

from __future__ import annotations

import json
import shutil

import pytest

from zephyr_train.errors import UserError
from zephyr_train.export import to_gguf

pytest.importorskip("gguf", reason="the export extra: pip install -e .[export]")


def variant(tiny_model_dir, tmp_path, **changes):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config.pop("rope_theta", None)
    config.pop("rope_parameters", None)
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def metadata(path, key):
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get(key)
    return None if field is None else field.parts[field.data[0]].tolist()


@pytest.mark.parametrize("rope, expected", [
    ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}, {"llama.rope.freq_base": [1e6]}),
    ({"rope_theta": 500000.0}, {"llama.rope.freq_base": [500000.0]}),  # a config saved before transformers 5
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0,
                          "original_max_position_embeddings": 1024}},
     {"llama.rope.scaling.factor": [4.0], "llama.rope.scaling.original_context_length": [1024]}),
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}},
     {"llama.rope.scaling.factor": [2.0], "llama.rope.scaling.original_context_length": None}),
])
def test_rope_reaches_the_gguf(tiny_model_dir, tmp_path, rope, expected):
    model = variant(tiny_model_dir, tmp_path, **rope)
    out = to_gguf.export(str(model), str(tmp_path / "m.gguf"), "f16").path
    for key, value in expected.items():
        got = metadata(out, key)
        assert got == value or (value and got == pytest.approx(value)), key
    assert metadata(out, "llama.attention.key_length") is None  # head_dim is hidden / heads here


def test_a_wider_head_is_written(tiny_model_dir, tmp_path):
    model = variant(tiny_model_dir, tmp_path, head_dim=64, rope_parameters={"rope_theta": 1e4})
    out = to_gguf.export(str(model), str(tmp_path / "m.gguf"), "f16").path  # 4 heads x 64 > hidden 128
    assert metadata(out, "llama.attention.key_length") == [64] == metadata(out, "llama.attention.value_length")


def test_llama3_frequency_factors_are_refused_before_writing(tiny_model_dir, tmp_path):
    model = variant(tiny_model_dir, tmp_path, rope_parameters={"rope_theta": 5e5, "rope_type": "llama3",
                                                               "factor": 8.0})
    with pytest.raises(UserError, match="rope_type llama3 needs per-dimension frequency factors"):
        to_gguf.export(str(model), str(tmp_path / "m.gguf"), "f16")
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".m.gguf*")) == []


def test_a_missing_llama_quantize_is_one_line_before_writing(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_QUANTIZE", str(tmp_path / "no-such-llama-quantize"))
    with pytest.raises(UserError, match=r"\$LLAMA_QUANTIZE is .*no-such-llama-quantize, which is not an executable"):
        to_gguf.export(str(tiny_model_dir), str(tmp_path / "m.gguf"), "q4_k_m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch, needs", [("Qwen2ForCausalLM", "qwen2 graph"), ("Gemma2ForCausalLM", "gemma2 graph"),
                                         ("Phi3ForCausalLM", "fused qkv"), ("MixtralForCausalLM", "ffn_*_exps")])
def test_other_families_check_knows_are_refused_by_name(tiny_model_dir, tmp_path, arch, needs):
    """The families `check` estimates besides Mistral/Llama: one line naming what llama.cpp would need, before
    anything is written."""
    from tests.conftest import assert_user_error, cli

    model = variant(tiny_model_dir, tmp_path, architectures=[arch])
    done = cli("export", str(model), "--gguf", str(tmp_path / "out" / "m.gguf"))
    assert_user_error(done, f"architecture {arch}", needs, "convert_hf_to_gguf.py")
    assert not (tmp_path / "out").exists()
