"""`zephyr-train merge` and `zephyr-train chat --prompt` on the tiny model, with a random LoRA adapter
(no training needed: a non-zero adapter changes the outputs, which is all merging has to preserve)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import cli


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("adapter")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


# transformers must load the merged model with PEFT impossible to import
NO_PEFT = """
import sys
class Hide:  # every finder answers as if peft were not installed
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "peft":
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
assert "peft" not in sys.modules
torch.save(model(torch.tensor([[1, 50, 60, 70, 80]])).logits, sys.argv[2])
"""


def test_merge_loads_without_peft_and_matches_the_adapter(adapter_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "merged"
    done = cli("merge", str(adapter_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"merged model saved in {out}" in done.stdout
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()

    logits_file = tmp_path / "logits.pt"
    loaded = subprocess.run([sys.executable, "-c", NO_PEFT, str(out), str(logits_file)], capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
        expected = lora(torch.tensor([[1, 50, 60, 70, 80]])).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(torch.tensor([[1, 50, 60, 70, 80]])).logits
    assert not torch.allclose(expected, base, atol=1e-3)
    torch.testing.assert_close(torch.load(logits_file), expected, rtol=1e-4, atol=1e-4)

    again = cli("merge", str(adapter_dir), "--out", str(out))
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_merge_bf16(adapter_dir, tmp_path):
    done = cli("merge", str(adapter_dir), "--out", str(tmp_path / "m16"), "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "m16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_merge_rejects_a_model_dir(tiny_model_dir, tmp_path):
    done = cli("merge", str(tiny_model_dir), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "adapter_config.json" in done.stderr


def test_chat_prompt_answers_like_the_library(adapter_dir, tiny_model_dir):
    from zephyr_train.inference import chat

    done = cli("chat", str(tiny_model_dir), "--prompt", "What is a=b?", "--system", "Be brief.", "--greedy",
               "--max-new-tokens", "12")
    assert done.returncode == 0, done.stderr[-3000:]
    model, tokenizer = chat.load(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a=b?"}]
    expected = chat.reply(model, tokenizer, messages, chat.Sampling(max_new_tokens=12, do_sample=False))
    assert done.stdout.strip() == expected and expected
    # one BOS, the Zephyr layout, the generation prompt last
    ids = chat.encode(tokenizer, messages)["input_ids"][0].tolist()
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids) == "<s><|system|>\nBe brief.</s>\n<|user|>\nWhat is a=b?</s>\n<|assistant|>\n"

    adapter = cli("chat", str(adapter_dir), "--prompt", "Hi", "--max-new-tokens", "4", "--seed", "1")
    assert adapter.returncode == 0, adapter.stderr[-3000:]


def test_chat_interactive_and_errors(tiny_model_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "zephyr_train", "chat", str(tiny_model_dir), "--greedy",
                           "--max-new-tokens", "4"], input="hello\n/reset\nagain\n/exit\n", capture_output=True,
                          text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(">>> ") == 4
    missing = cli("chat", str(tmp_path / "nope"), "--prompt", "hi")
    assert missing.returncode == 2 and "no such model directory" in missing.stderr
    stray = cli("chat", str(tiny_model_dir), "k=v")
    assert stray.returncode == 2 and "unrecognized arguments: k=v" in stray.stderr
