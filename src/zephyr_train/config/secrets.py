"""Secrets never reach a saved file, a log line or a model card.

Token-like keys (token, secret, password, api_key) are masked by name wherever they sit in a recipe; Hub
tokens (`hf_...`) are masked inside any value; free text also has the values of secret environment
variables (HF_TOKEN, WANDB_API_KEY, OPENAI_API_KEY, ...) masked, whatever their shape.
"""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_KEY = re.compile(r"token|secret|password|api_key", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")


def redact(value: Any, key: str = "") -> Any:
    """Secrets never reach a saved file: token-like keys and hf_ tokens inside values are masked."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value and SECRET_KEY.search(key) and isinstance(value, str | bytes):
        return "<redacted>"
    if isinstance(value, str):
        return SECRET_VALUE.sub("<redacted>", value)
    return value


def scrub(text: str) -> str:
    """`redact` for free text: also masks the values of secret environment variables (HF_TOKEN,
    WANDB_API_KEY, ...) wherever they appear, whatever their shape."""
    for key, value in os.environ.items():
        if SECRET_KEY.search(key) and len(value) >= 8:
            text = text.replace(value, "<redacted>")
    return SECRET_VALUE.sub("<redacted>", text)
