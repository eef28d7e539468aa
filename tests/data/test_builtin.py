"""The embedded default is reproducible: bundled data from its generator, tiny model from its seed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from zephyr_train.data import builtin


def load_generator():
    """The generator is a script (scripts/make_sample_data.py), not part of the installed package."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_data_is_what_the_generator_writes(tmp_path):
    load_generator().write_bundle(tmp_path)
    for bundled in sorted(builtin.SAMPLE_ROOT.rglob("*.jsonl")):
        regenerated = tmp_path / bundled.relative_to(builtin.SAMPLE_ROOT)
        assert digest(regenerated) == digest(bundled), bundled


def test_sample_schemas_and_signal():
    chat = [json.loads(x) for x in (builtin.SAMPLE_ROOT / "ultrachat" / "train_sft.jsonl").read_text().splitlines()]
    row = chat[0]
    assert set(row) == {"prompt", "prompt_id", "messages"}
    assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
    turns = {sum(m["role"] == "user" for m in r["messages"]) for r in chat}
    assert turns == {1, 2, 3, 4}
    prefs = [json.loads(x) for x in
             (builtin.SAMPLE_ROOT / "ultrafeedback" / "train_prefs.jsonl").read_text().splitlines()]
    assert set(prefs[0]) >= {"prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"}
    assert all(p["score_chosen"] > p["score_rejected"] for p in prefs)
    # the preference signal is not length: chosen and rejected answers are about as long on average
    chosen = sum(len(p["chosen"][-1]["content"]) for p in prefs)
    rejected = sum(len(p["rejected"][-1]["content"]) for p in prefs)
    assert 0.85 < chosen / rejected < 1.15


def test_tiny_model_is_deterministic(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("ZEPHYR_TRAIN_CACHE", str(tmp_path))
    rebuilt = builtin.model_dir("builtin:tiny-mistral")
    assert rebuilt != tiny_model_dir and rebuilt.name == tiny_model_dir.name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(rebuilt / name) == digest(tiny_model_dir / name), name
    config = json.loads((rebuilt / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["num_key_value_heads"] < config["num_attention_heads"]


def test_real_tokenizer_model_without_mistral_common_is_one_user_error(tmp_path, monkeypatch):
    """builtin:tiny-mistral-32k needs mistral-common (a dev extra); without it: what to install, not a traceback."""
    import sys

    import pytest

    from zephyr_train.errors import UserError

    monkeypatch.setitem(sys.modules, "mistral_common", None)  # as if not installed
    monkeypatch.setenv("ZEPHYR_TRAIN_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="pip install mistral-common"):
        builtin.model_dir("builtin:tiny-mistral-32k")
    assert not any(tmp_path.iterdir())  # nothing half-built left behind
