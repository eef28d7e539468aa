"""The LLM judge: any OpenAI-compatible chat-completions endpoint, through the `openai` client.

The key comes from OPENAI_API_KEY and lives only in the client object: it is never written to a file,
a log line or an error message (errors go through `scrub`). A failing request is retried with exponential
backoff. As in FastChat, one that keeps failing (a refusal, a content filter, a 5xx) is recorded as
`$ERROR$` with score -1 and the run completes; an error no request can get past (401, 403, 404, no quota,
an unreachable endpoint) stops the run with one line, what was judged so far already saved, so the same
command resumes without paying twice.
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
ERROR_OUTPUT = "$ERROR$"  # FastChat's judgment text for a request that kept failing (its score: -1)


class JudgeFailed(Exception):
    """The judge cannot be used at all (key, model, endpoint); the message is safe to print (no key in it)."""


class RequestFailed(Exception):
    """One grading request kept failing; recorded as ERROR_OUTPUT with score -1. Safe to print."""


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
    """The judge's score from `[[rating]]`, else `[rating]` (FastChat's two patterns); None when the verdict
    holds neither (counted, not fatal). An int when written as one, as FastChat's `ast.literal_eval` reads it,
    so a saved score is `8` as in FastChat's files."""
    match = RATING.search(text) or RATING_FALLBACK.search(text)
    if not match:
        return None
    value = match.group(1)
    return float(value) if "." in value else int(value)


class Judge:
    def __init__(self, settings: JudgeSettings) -> None:
        from openai import OpenAI

        self.settings = settings
        # a local server needs no key, but the client insists on one; "EMPTY" is vLLM's convention
        self.client = OpenAI(api_key=os.environ.get(KEY_ENV) or "EMPTY", base_url=settings.base_url,
                             max_retries=0, timeout=300.0)

    def complete(self, system: str, user: str) -> str:
        """The judge's reply to one grading prompt, as FastChat's `chat_completion_openai` asks for it (system
        message only when non-empty, n 1, temperature 0, 2048 tokens). A failure is retried with backoff;
        see `_give_up` for what stops the run and what is recorded as $ERROR$."""
        import openai

        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        wait = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.model, messages=messages, n=1, temperature=0, max_tokens=MAX_TOKENS)
                return response.choices[0].message.content or ""
            except openai.APIError as err:
                _give_up(err, attempt, self.settings.retries)
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def _give_up(err: Exception, attempt: int, retries: int) -> None:
    """Raise unless the request is worth another try. A wrong key, model or endpoint (401, 403, 404, no
    quota) and an endpoint still unreachable after the retries stop the run (`JudgeFailed`): every other
    request would fail the same way. Anything else that keeps failing (a 400 refusal, a content filter, a
    context length, a 5xx, a timeout) fails this request only (`RequestFailed`): it is recorded as
    FastChat records it, $ERROR$ with score -1, and the run goes on."""
    import openai

    fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    if isinstance(err, fatal) or getattr(err, "code", None) == "insufficient_quota":
        raise JudgeFailed(scrub(describe(err))) from None
    if attempt < retries:
        return
    unreachable = isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError)
    kind = JudgeFailed if unreachable else RequestFailed
    raise kind(scrub(f"{describe(err)} after {attempt + 1} attempts")) from None


def endpoint(settings: JudgeSettings) -> str:
    """Where the judge runs, for summaries and reports: the endpoint's host (and port) only, never a path,
    query or user part that could carry a key."""
    from urllib.parse import urlsplit

    if not settings.base_url:
        return "api.openai.com"
    parts = urlsplit(settings.base_url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname or "?")


def describe(err: Exception) -> str:
    """One line about an HTTP failure: the status, if any, and the server's message."""
    status = getattr(err, "status_code", None)
    message = str(getattr(err, "message", "") or err).splitlines()[0][:160] if str(err) else type(err).__name__
    return f"HTTP {status}: {message}" if status else f"{type(err).__name__}: {message}"
