"""Answer safety: prompt-injection flags and PII redaction.

Both are lexical heuristics: cheap enough for every request, honest about being
heuristics (flags, not verdicts), and easy to audit. Whether an answer is grounded is
decided per sentence, in ``services.rag.answer.verification``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Phrases typical of attempts to override the system prompt or exfiltrate it.
_INJECTION_PATTERNS: Final = {
    "override_instructions": re.compile(
        r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b"
        r"(instructions?|rules|prompts?|guidelines|directions|context|sources)\b",
        re.IGNORECASE,
    ),
    "prompt_exfiltration": re.compile(
        r"\b(reveal|show|print|repeat|output|leak|tell me)\b[^.\n]{0,40}\b"
        r"(system prompt|hidden prompt|initial prompt|your (instructions|prompt|rules))",
        re.IGNORECASE,
    ),
    "role_override": re.compile(
        r"\b(you are now|from now on,? you|act as|pretend (to be|you are)|new instructions:|jailbreak|"
        r"developer mode|\bDAN\b)",
        re.IGNORECASE,
    ),
    "role_markers": re.compile(
        r"(<\|?(im_start|im_end|system|endoftext)\|?>|^\s*(system|assistant)\s*:|\[/?INST\]|###\s*system)",
        re.IGNORECASE | re.MULTILINE,
    ),
}

_EMAIL_RE: Final = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
# 13 to 19 digits, optionally grouped by single spaces or hyphens.
_CARD_RE: Final = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International (+CC ...) or North-American style numbers; 7+ digits in separators.
# Not part of a longer run of digit groups (ids, failed card numbers).
_PHONE_RE: Final = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}"
    r"(?![ .-]?\d)"
)

EMAIL_MASK: Final = "[email redacted]"
CARD_MASK: Final = "[card redacted]"
PHONE_MASK: Final = "[phone redacted]"


def injection_flags(text: str) -> list[str]:
    """Names of the injection patterns the text matches (empty when none)."""
    return [name for name, pattern in _INJECTION_PATTERNS.items() if pattern.search(text)]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class Redaction:
    text: str
    kinds: list[str]


def redact(text: str) -> Redaction:
    """Masks emails, Luhn-valid card numbers and phone numbers; says which kinds it found."""
    kinds: list[str] = []

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        if luhn_valid(digits):
            kinds.append("card")
            return CARD_MASK
        return match.group()  # long digit runs that fail Luhn are ids, not cards

    text, emails = _EMAIL_RE.subn(EMAIL_MASK, text)
    kinds.extend(["email"] * emails)
    text = _CARD_RE.sub(card, text)
    text, phones = _PHONE_RE.subn(PHONE_MASK, text)
    kinds.extend(["phone"] * phones)
    return Redaction(text, sorted(set(kinds)))
