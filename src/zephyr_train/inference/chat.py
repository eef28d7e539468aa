"""`zephyr-train chat MODEL_DIR`: talk to a trained model in the terminal, or answer one `--prompt`.

Prompts are rendered with the template saved next to the model (Zephyr's) and encoded the way
inference does it: rendered text, then one BOS from the tokenizer, never two. A LoRA adapter
directory loads on its base through transformers' PEFT integration. Also used by the run report to
sample answers, so what the report shows is what a user gets from `chat`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.data.chat_template import ZEPHYR
from zephyr_train.errors import UserError
from zephyr_train.inference import portable
from zephyr_train.inference.source import local_dir
from zephyr_train.run_files import ADAPTER_CONFIG

EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    do_sample: bool = True
    repetition_penalty: float = 1.0

    def generate_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                    "repetition_penalty": self.repetition_penalty}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "repetition_penalty": self.repetition_penalty}


def check_model_dir(model_dir: str | Path) -> Path:
    path = local_dir(model_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory; give a stage directory such as runs/smoke/dpo")
    if not ((path / "config.json").exists() or (path / ADAPTER_CONFIG).exists()):
        raise UserError(f"{path} holds no model (config.json) or LoRA adapter (adapter_config.json)")
    if not (path / "tokenizer_config.json").exists():
        raise UserError(f"{path} holds no tokenizer; chat needs the tokenizer saved with the model")
    return path


def load(model_dir: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; an adapter directory loads on the base it names."""
    from transformers import AutoTokenizer


    path = check_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:

        tokenizer.chat_template = ZEPHYR
    import torch

    placement = {"device_map": "auto"} if torch.cuda.is_available() else {}
    model = portable.load_model(path, **placement)  # an adapter on its base, wherever the run folder is
    return model.eval(), tokenizer


def encode(tokenizer: Any, messages: list[dict]) -> Any:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt")  # adds the one BOS the model was trained with


def reply(model: Any, tokenizer: Any, messages: list[dict], sampling: Sampling, stream: bool = False) -> str:
    """The assistant's next answer; printed token by token as it is generated when `stream`."""
    import torch
    from transformers import TextStreamer

    inputs = encode(tokenizer, messages).to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**inputs, **sampling.generate_kwargs(), streamer=streamer, pad_token_id=pad)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def start(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def run_chat(model_dir: str, prompt: str | None, system: str | None, sampling: Sampling, seed: int | None) -> None:
    """One answer to `prompt` on stdout, or an interactive session (/reset clears it, /exit ends it)."""
    model, tokenizer = load(model_dir)
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    if prompt is not None:
        reply(model, tokenizer, [*start(system), {"role": "user", "content": prompt}], sampling, stream=True)
        return
    print(f"chatting with {model_dir}; /reset starts over, /exit (or Ctrl-D) ends", file=sys.stderr)
    messages = start(system)
    while True:
        try:
            line = input("\n>>> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return
        if line in EXIT_WORDS:
            return
        if line == "/reset":
            messages = start(system)
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        answer = reply(model, tokenizer, messages, sampling, stream=True)
        messages.append({"role": "assistant", "content": answer})
