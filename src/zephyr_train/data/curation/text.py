"""Text repairs real UltraFeedback answers need, shared by `data ultrafeedback` and the DPO stage.

Real pairs carry Windows line ends (`\\r\\n`, which tokenize differently from `\\n`, so two answers
that read the same train as different text) and answers whose line breaks arrived as the two
characters backslash + n: written by a double JSON encoding, they render as one long line with
literal `\\n` in it. Both are repaired and each repair counted; nothing else is touched.
"""

from __future__ import annotations

CRLF = "CRLF line ends -> LF"
ESCAPES = "literal \\n escapes -> line breaks"
_ESCAPED = {"\\r\\n": "\n", "\\n": "\n", "\\t": "\t", '\\"': '"'}


def looks_escaped(text: str) -> bool:
    """A whole text written with literal escapes: no real line break, and a literal paragraph break or at
    least three literal `\\n`. One or two inside a single line are left alone: `print("a\\nb")`, a path."""
    return "\n" not in text and ("\\n\\n" in text or text.count("\\n") >= 3)


def repair(text: str) -> tuple[str, list[str]]:
    """(repaired text, the repairs made: CRLF and/or ESCAPES)."""
    made = []
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        made.append(CRLF)
    if looks_escaped(text):
        for escaped, char in _ESCAPED.items():
            text = text.replace(escaped, char)
        made.append(ESCAPES)
    return text, made


def repair_messages(messages: list[dict]) -> tuple[list[dict], list[str]]:
    """Every message's content repaired; the repairs made, each named once."""
    out, made = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            content, fixes = repair(content)
            made.extend(f for f in fixes if f not in made)
            message = {**message, "content": content}
        out.append(message)
    return out, made
