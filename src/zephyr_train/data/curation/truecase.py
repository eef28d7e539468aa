"""Truecasing for UltraChat turns: "Hello. how are you? i think so." -> "Hello. How are you? I think so."

About 5% of UltraChat dialogues have such casing slips (ZEPHYR.md). Only two safe fixes are made: a
lowercase letter that starts a sentence, and a lone lowercase "i" used as the pronoun. Code (fenced
blocks, inline `code`, lines indented as code), URLs and e-mail addresses are never touched, and a
sentence-initial word is only capitalized when it is a plain word (no digits, dots, underscores,
capitals, brackets, slashes or hyphens inside or right after it) that the same text does not also
use as code, so identifiers like `npm`, `os.path` or `my_var` at a sentence start survive.
"""

from __future__ import annotations

import bisect
import re

# (trigger substring, what it protects): each pattern only runs on text holding its trigger (speed)
PROTECTED = (
    ("```", re.compile(r"```[\s\S]*?(?:```|\Z)")),          # fenced code block (an unclosed one runs to the end)
    ("`", re.compile(r"`[^`\n]+`")),                         # inline code
    ("://", re.compile(r"\b(?:https?|ftp)://\S+")),           # URLs
    ("www.", re.compile(r"\bwww\.\S+")),
    ("@", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),       # e-mail addresses
    ("    ", re.compile(r"^(?: {4}|\t)[^\n]*", re.MULTILINE)),  # indented code lines
    ("\t", re.compile(r"^\t[^\n]*", re.MULTILINE)),
)
# a plain lowercase word (quotes/brackets allowed before it) after ". " / "! " / "? ", or at the start
_WORD = r"([\"'(\[]?)([a-z])(?=[a-z']*(?:[\s,;:!?)\"]|\.(?:\s|\Z)|\Z))"
SENTENCE_START = re.compile(r"[.!?][\"')\]]?\s+" + _WORD)  # no \A alternative: it makes scanning 4x slower
TEXT_START = re.compile(r"\A\s*" + _WORD)
LOWER_WORD = re.compile(r"[a-z']*")
# "i", "i'm", "i've", "i'll", "i'd" standing alone, not part of a word, path, version or expression
LONE_I = re.compile(r"i(?<![\w.@/\\'’`$#-]i)(?=(?:['’](?:m|ve|ll|d))?(?:[\s,;:!?)\"]|\.(?:\s|\Z)|\Z))"
                    r"(?!\s*(?:[-+*/%<>=!]|\+\+|in\s+range))")
ABBREVIATIONS = {"e.g", "i.e", "vs", "cf", "approx", "etc", "al", "incl", "mr", "mrs", "ms", "dr", "st", "no", "fig"}
CODE_WORDS_BEFORE_I = ("for ", "variable ", "index ", "let ", "int ", "var ")


def _after_abbreviation(text: str, start: int) -> bool:
    """True when the "." before `start` ends an abbreviation such as "e.g." rather than a sentence."""
    head = text[max(0, start - 16):start].rstrip()
    if not head.endswith("."):
        return False
    if head.endswith(".."):  # an ellipsis does not end a sentence reliably
        return True
    word = re.split(r"[\s(\[\"']", head[:-1])[-1].lower()
    return word in ABBREVIATIONS


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans of code, URLs and e-mail addresses."""
    found = sorted((m.start(), m.end()) for trigger, pattern in PROTECTED if trigger in text
                   for m in pattern.finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def truecase(text: str) -> str:
    """The text with sentence-initial lowercase letters and a lone pronoun "i" capitalized."""
    spans = protected_spans(text)
    starts = [s for s, _ in spans]
    code_words = {w for s, e in spans for w in re.findall(r"[a-z]\w*", text[s:e])}

    def protected(pos: int) -> bool:
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and pos < spans[i][1]

    def sentence(m: re.Match) -> str:
        letter_at = m.start(2)
        word = LOWER_WORD.match(text, letter_at).group(0)
        if protected(letter_at) or word in code_words or _after_abbreviation(text, m.start(1)):
            return m.group(0)
        return m.group(0)[:letter_at - m.start()] + m.group(2).upper()

    def pronoun(m: re.Match) -> str:
        if protected(m.start()) or text[max(0, m.start() - 9):m.start()].lower().endswith(CODE_WORDS_BEFORE_I):
            return "i"
        return "I"

    text = TEXT_START.sub(sentence, text, count=1)
    text = SENTENCE_START.sub(sentence, text)
    return LONE_I.sub(pronoun, text)
