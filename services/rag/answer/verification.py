"""Sentence-level verification: a sentence is shown only when a source sentence says it.

A sentence is supported by a source sentence when both hold:
- they mean the same (cosine of their embeddings at least ``min_similarity``), and
- its specifics are there: every number, identifier, code span and proper name of the
  sentence appears in the source sentence or its context (title, heading, the sentence
  before), enough of its content words do (``min_coverage``), and no run of more than
  ``max_new_run`` content words in a row is new to it (an invented clause).

A sentence that cites ``[n]`` is checked against source ``n`` only; one that cites
nothing, against every source. Its citations are then rewritten to the source that
supports it, so a shown ``[n]`` always points at the passage holding the claim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from services.common.sentences import is_heading, normalise_space, split_sentences
from services.rag.answer.evidence import SourceSentence, Vectors
from services.rag.answer.key_terms import (
    Vocabulary,
    content_coverage,
    foreign_words,
    key_terms,
    longest_new_run,
    missing_terms,
    polarity,
)

if TYPE_CHECKING:
    from services.rag.config import RagSettings

# Bumped whenever the rules change, so cached answers checked by older rules are not served.
RULES_VERSION: Final = 17
_MARKER_RE: Final = re.compile(r"\s*\[(\d{1,3})\]")
_MIN_WORDS: Final = 4
_SPACED_PUNCTUATION_RE: Final = re.compile(r"\s+([,.;:!?])")
_STRANDED_RE: Final = re.compile(r"([,;:]+)([.!?])")
_STRICT_COVERAGE: Final = 0.8
_REPLY_RE: Final = re.compile(r"^(yes|no)\b[,.!]?\s*", re.IGNORECASE)
# A phrase cut off before punctuation ("exposed by the, which"): not a statement.
_BROKEN_RE: Final = re.compile(r"\b(the|a|an|and|or|of|by|with|which)\s*[,.;:!?]", re.IGNORECASE)
# A marker followed by a capitalised word ends a sentence, whatever the punctuation says:
# "... never as the secret [4] Cached answers are ..." is two.
_MARKER_THEN_CAPITAL_RE: Final = re.compile(r"(?<=\])\s+(?=[A-Z])")
# A last clause ending on a word that needs an object ("citing them as."): its object was a marker.
_DANGLING_RE: Final = re.compile(r",[^,]*\b(?:as|like|of|to|with|by)([.!?])$", re.IGNORECASE)
_LEAD_IN_RE: Final = re.compile(
    r"^the answer(?: to (?:this|the|your) question)? is:\s*(?=[A-Z`])", re.IGNORECASE
)
_CLOSERS: Final = "\"'”’`)"


@dataclass(frozen=True)
class VerifyPolicy:
    min_similarity: float
    min_coverage: float
    max_foreign: int = 1
    max_new_run: int = 2

    @classmethod
    def from_settings(cls, settings: RagSettings) -> VerifyPolicy:
        return cls(
            settings.support_min_similarity,
            settings.support_min_coverage,
            settings.support_max_foreign_words,
            settings.support_max_new_run,
        )


@dataclass(frozen=True)
class Claim:
    """One sentence of a generated answer: its text without markers, and what it cited."""

    text: str
    cited: tuple[int, ...]

    @property
    def statement(self) -> str:
        """What is checked: "No, the files come from a package." states the files' origin;
        its "No" answers the question, and no source says it."""
        return _REPLY_RE.sub("", self.text, count=1) or self.text


@dataclass(frozen=True)
class Verdict:
    text: str  # as shown, without citation markers
    citations: tuple[int, ...]
    supported: bool
    score: float  # cosine to the best candidate source sentence
    evidence: SourceSentence | None


def claims(answer: str, n_sources: int, titles: Iterable[str] = ()) -> list[Claim]:
    """The answer's statements, markers taken out and kept as citations (in range only).

    A source title the model echoes before a sentence ("The rag orchestrator The rag
    service answers questions.") and a lead-in ("The answer to this question is: ...") are
    not part of what it states, and are taken off.

    Headings, fragments of fewer than ``_MIN_WORDS`` words, sentences that never end (cut
    off by the token limit: "Each key has its own rate"), questions and lead-ins ending in
    a colon state nothing to check or show (a small model echoes "# Running Quarry" or
    "Question: ..."), and a repeated sentence is shown once.
    """
    found: dict[str, Claim] = {}
    echoes = sorted({t.strip() for t in titles if t.strip()}, key=len, reverse=True)
    pieces = (p for s in split_sentences(answer) for p in _MARKER_THEN_CAPITAL_RE.split(s))
    for sentence in pieces:
        cited = tuple(sorted({int(n) for n in _MARKER_RE.findall(sentence) if 1 <= int(n) <= n_sources}))
        text = _unprefixed(_tidy(normalise_space(_MARKER_RE.sub("", sentence))), echoes)
        if is_heading(text) or len(text.split()) < _MIN_WORDS or text.endswith(("?", ":")):
            continue
        if not text.rstrip(_CLOSERS).endswith((".", "!")):
            continue
        if text.casefold().startswith(("question:", "answer:", "sources:")) or _BROKEN_RE.search(text):
            continue
        found.setdefault(text.casefold(), Claim(text, cited))
    return list(found.values())


def _unprefixed(text: str, titles: list[str]) -> str:
    text = _LEAD_IN_RE.sub("", text, count=1)
    for title in titles:
        rest = text[len(title) :].lstrip()
        if text.casefold().startswith(title.casefold() + " ") and rest[:1].isupper():
            return rest
    return text


def _tidy(text: str) -> str:
    """Punctuation left where markers were, and a last clause they ended: "..., citing them
    as [1], [2]." reads "...."."""
    text = _SPACED_PUNCTUATION_RE.sub(r"\1", text)
    text = _STRANDED_RE.sub(r"\2", text)
    return _DANGLING_RE.sub(r"\1", text)


def verify(
    claim: Claim,
    vector: Vectors,
    evidence: Sequence[SourceSentence],
    evidence_vectors: Sequence[Vectors],
    vocabulary: Vocabulary,
    policy: VerifyPolicy,
) -> Verdict:
    """The claim's verdict; ``evidence_vectors`` are one or more embeddings of the evidence
    (the sentence alone, the sentence in its context), and the closer one counts."""
    pool = [i for i, e in enumerate(evidence) if not claim.cited or e.n in claim.cited]
    if not pool:
        return Verdict(claim.text, claim.cited, False, 0.0, None)
    similarities = np.max([vectors[pool] @ vector for vectors in evidence_vectors], axis=0)
    statement = claim.statement
    terms = key_terms(statement, vocabulary)
    claim_polarity = polarity(statement)
    order = np.argsort(-similarities, kind="stable")
    for rank in order:
        score = float(similarities[rank])
        if score < policy.min_similarity:
            break
        candidate = evidence[pool[rank]]
        # Names may come from the title or heading ("The Quarry gateway"); the claim's other
        # words must come from what the sentence itself says.
        window = f"{candidate.label} {candidate.statement}"
        if missing_terms(terms, window):
            continue
        if len(foreign_words(statement, window, vocabulary)) > policy.max_foreign:
            continue
        if longest_new_run(statement, window) > policy.max_new_run:
            continue
        # A source that says "only" or "never" where the claim does not is easy to contradict
        # with shared words ("stored as plain text" against "only as salted hashes, never as
        # the secret"): then the claim must use the source's words throughout.
        needed = policy.min_coverage
        if polarity(candidate.statement) - claim_polarity:
            needed = max(needed, _STRICT_COVERAGE)
        if content_coverage(statement, candidate.statement) < needed:
            continue
        return Verdict(claim.text, (candidate.n,), True, round(score, 4), candidate)
    best = evidence[pool[int(order[0])]]
    return Verdict(claim.text, claim.cited, False, round(float(similarities[order[0]]), 4), best)
