"""Answers from a model to chat prompts: vLLM when it is installed and a GPU is present, batched
transformers generation otherwise. Both render each conversation with the model's own chat template
(Zephyr's for our models), encode it with one BOS the way `chat` does, stop at EOS, and decode without
special tokens, so the same greedy answers come out of either backend (up to kernel numerics).

MT-Bench's prompts are the ones FastChat renders for the model (`fastchat_system_turn`); its sampling is
FastChat's (`sampling`). Prompts are grouped by temperature (MT-Bench samples writing at 0.7 and math
greedily) and, in the transformers backend, generated `batch_size` at a time with left padding, longest
first so a batch pads little.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.data.chat_template import ZEPHYR
from zephyr_train.errors import UserError
from zephyr_train.inference import chat

GREEDY_BELOW = 1e-4  # FastChat: temperature < 1e-4 means greedy decoding


def sampling(temperature: float) -> dict[str, Any]:
    """`generate` arguments for a temperature, by FastChat's rule: greedy below 1e-4, sampled above."""
    if temperature < GREEDY_BELOW:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature}


def fastchat_system_turn(model_dir: str | Path) -> bool:
    """Whether FastChat's prompt for this model opens with an empty system turn. FastChat renders a Zephyr
    model with its `zephyr` conversation template, whose empty system message still renders as
    `<|system|>\n</s>\n` (how zephyr-7b-beta was trained and scored); its other templates add nothing for
    an empty system message. The model's own template decides (Zephyr's when it ships none, as `chat`)."""
    from zephyr_train.data.chat_template import model_template, renders_like_zephyr

    return renders_like_zephyr(model_template(str(model_dir)) or ZEPHYR)


@dataclass
class Request:
    key: Any  # the caller's id for the answer
    messages: list[dict]
    temperature: float
    max_new_tokens: int


def vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pick_backend(name: str) -> str:
    """`auto` is vLLM when it can run here, else transformers; asking for vLLM where it cannot is an error."""
    if name == "transformers":
        return name
    usable = vllm_usable()
    if name == "vllm" and not usable:
        raise UserError("--backend vllm: needs the vllm package and a CUDA GPU; install vllm on a GPU box, or "
                        "pass --backend transformers")
    return "vllm" if usable else "transformers"


class Generator:
    """Loads a model once and answers many requests."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", batch_size: int = 8, seed: int = 42) -> None:

        self.model_dir = chat.check_model_dir(model_dir)
        self.backend = pick_backend(backend)
        self.batch_size, self.seed = batch_size, seed
        if self.backend == "vllm":
            from transformers import AutoTokenizer
            from vllm import LLM

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.llm = LLM(model=str(self.model_dir), seed=seed)
        else:
            self.model, self.tokenizer = chat.load(self.model_dir)
        if self.tokenizer.chat_template is None:

            self.tokenizer.chat_template = ZEPHYR

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[Request], on_batch: Callable[[list[tuple[Any, str]]], None]) -> None:
        """Answer every request; `on_batch` gets [(key, answer)] as each batch finishes (so the caller
        can save them and a crash loses at most one batch)."""
        groups: dict[tuple[float, int], list[Request]] = {}
        for request in requests:
            groups.setdefault((request.temperature, request.max_new_tokens), []).append(request)
        for (temperature, max_new), group in groups.items():
            if self.backend == "vllm":
                on_batch(self._vllm(group, temperature, max_new))
                continue
            group = sorted(group, key=lambda r: -len(self.render(r.messages)))
            for start in range(0, len(group), self.batch_size):
                on_batch(self._transformers(group[start:start + self.batch_size], temperature, max_new))

    def _vllm(self, group: list[Request], temperature: float, max_new: int) -> list[tuple[Any, str]]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=sampling(temperature).get("temperature", 0.0), max_tokens=max_new,
                                seed=self.seed, skip_special_tokens=True)
        # token ids, not text: vLLM's text path would add a second BOS to a template that has one
        prompts = [{"prompt_token_ids": self.tokenizer(self.render(r.messages))["input_ids"]} for r in group]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [(r.key, o.outputs[0].text.strip()) for r, o in zip(group, outputs, strict=True)]

    def _transformers(self, batch: list[Request], temperature: float, max_new: int) -> list[tuple[Any, str]]:
        import torch
        from transformers import set_seed

        tokenizer, model = self.tokenizer, self.model
        tokenizer.padding_side = "left"
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = pad
        inputs = tokenizer([self.render(r.messages) for r in batch], return_tensors="pt", padding=True)
        inputs = inputs.to(model.device)
        set_seed(self.seed)
        with torch.no_grad():
            out = model.generate(**inputs, **sampling(temperature), max_new_tokens=max_new, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        return [(r.key, text.strip()) for r, text in zip(batch, texts, strict=True)]
