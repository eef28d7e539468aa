"""The LLM judge: any OpenAI-compatible chat-completions endpoint, through the `openai` client.

The key comes from OPENAI_API_KEY and lives only in the client object: it is never written to a file,
a log line or an error message (errors go through `scrub`). A request that fails with a rate limit, a
timeout, a connection error or a 5xx is retried with exponential backoff; when the retries run out, or
on an error that retrying cannot fix (401, 404, ...), `JudgeFailed` stops the run, and what was judged
so far is already saved, so the same command resumes without paying twice.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from zephyr_train.config.secrets import scrub
from zephyr_train.errors import UserError

KEY_ENV = "OPENAI_API_KEY"
# FastChat's single-grading patterns: "[[8]]", and "[8]" as a fallback some judges write.
RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
MAX_TOKENS = 2048  # FastChat's judge settings: temperature 0, up to 2048 tokens


class JudgeFailed(Exception):
    """The judge could not be reached or refused; the message is safe to print (no key in it)."""


@dataclass
class JudgeSettings:
    model: str = "gpt-4"
    base_url: str | None = None
    parallel: int = 8
    retries: int = 5
    backoff_s: float = 2.0  # first wait; doubled after each failure


def check_configured(settings: JudgeSettings, what: str = "--judge-base-url") -> None:
    """Before any answer is generated: a judge needs a key or an endpoint of its own."""
    if not os.environ.get(KEY_ENV) and not settings.base_url:
        raise UserError(f"judge: no {KEY_ENV} in the environment and no {what}; export {KEY_ENV} for OpenAI, "
                        f"or point {what} at an OpenAI-compatible server (vLLM, TGI), or skip judging "
                        "with --no-judge")


def parse_rating(text: str) -> float | None:
    """The judge's score from `[[rating]]`; None when the verdict holds no rating (counted, not fatal)."""
    match = RATING.search(text) or RATING_FALLBACK.search(text)
    if not match:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


class Judge:
    def __init__(self, settings: JudgeSettings) -> None:
        from openai import OpenAI

        self.settings = settings
        # a local server needs no key, but the client insists on one; "EMPTY" is vLLM's convention
        self.client = OpenAI(api_key=os.environ.get(KEY_ENV) or "EMPTY", base_url=settings.base_url,
                             max_retries=0, timeout=300.0)

    def complete(self, system: str, user: str) -> str:
        """The judge's reply to one grading prompt, retried with backoff on transient failures."""
        import openai

        transient = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                     openai.InternalServerError)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        wait = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.model, messages=messages, temperature=0.0, max_tokens=MAX_TOKENS)
                return response.choices[0].message.content or ""
            except transient as err:
                if attempt == self.settings.retries:
                    raise JudgeFailed(scrub(f"{describe(err)} after {attempt + 1} attempts")) from None
                time.sleep(wait)
                wait *= 2
            except openai.APIError as err:
                raise JudgeFailed(scrub(describe(err))) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def describe(err: Exception) -> str:
    """One line about an HTTP failure: the status, if any, and the server's message."""
    status = getattr(err, "status_code", None)
    message = str(getattr(err, "message", "") or err).splitlines()[0][:160] if str(err) else type(err).__name__
    return f"HTTP {status}: {message}" if status else f"{type(err).__name__}: {message}"
