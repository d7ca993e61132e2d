"""The terms of a sentence that must appear, as written, in whatever supports it.

Embeddings say two sentences are about the same thing; they barely notice that
``port 8102`` is not ``port 8100`` or that ``the LLM service`` is not ``the rag service``.
So a claim's specifics are checked lexically: numbers, identifiers (``llama.cpp``,
``qk_``, ``HTTP/2``, ``SmolLM2-135M-Instruct``), code spans and proper names.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import snowballstemmer

# Function words: never names, and no evidence that a sentence came from a source.
_STOPWORD_TEXT: Final = """
    a an and are as at be been but by can could did do does for from had has have he her his how i if
    in into is it its itself me more most my no not of on or our she so such than that the their them
    then there these they this those to too up us very was we were what when where which while who whom
    why will with would you your yours also any all each may might must should only other over same some
    just about after again against because before being below between both during few further here once
    out own under until am yes"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
_CODE_RE: Final = re.compile(r"`([^`]+)`")
# Words with their inner dots, slashes, hyphens and underscores: "llama.cpp", "HTTP/2", "qk_".
_TOKEN_RE: Final = re.compile(r"[^\W_](?:[\w.\-/]*[^\W_])?_*")
_PART_RE: Final = re.compile(r"[^\W\d_]+")
# Words that turn a claim around: a sentence using one needs a source that uses it too.
_POLARITY: Final = frozenset({"no", "not", "never", "none", "nothing", "only", "without", "always", "cannot"})
# Units: "60 requests per second" is not "60 requests per minute".
_UNITS: Final = frozenset(
    {
        "ms",
        "millisecond",
        "second",
        "minute",
        "hour",
        "day",
        "week",
        "month",
        "year",
        "byte",
        "kb",
        "mb",
        "gb",
        "tb",
        "kib",
        "mib",
        "gib",
        "percent",
    }
)
# Dotted abbreviations are words, not identifiers.
_ABBREVIATIONS: Final = frozenset({"e.g", "i.e", "etc", "vs", "a.k.a"})
_MARKER_RE: Final = re.compile(r"\[\d{1,3}\]")
_NEGATED_RE: Final = re.compile(r"\w+n['’]t\b", re.IGNORECASE)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """Word-like tokens as written (case kept), code markers and citations excluded."""
    return _TOKEN_RE.findall(_MARKER_RE.sub(" ", text.replace("`", " ")))


_STEMMER: Final = snowballstemmer.stemmer("english")


def stem(token: str) -> str:
    """The Snowball (Porter 2) stem of a word, so "stores" meets "stored"; other tokens folded."""
    word = _fold(token)
    return str(_STEMMER.stemWord(word)) if word.isalpha() else word


_UNIT_STEMS: Final = frozenset(stem(unit) for unit in _UNITS)


def _is_identifier(token: str) -> bool:
    if _fold(token) in _ABBREVIATIONS:
        return False
    if any(c.isdigit() for c in token) or any(c in token for c in "._/"):
        return True
    # Capitals past the first letter: "vLLM", "GGUF", "OpenAI".
    return any(c.isupper() for c in token[1:])


@dataclass(frozen=True)
class Vocabulary:
    """What the sources as a whole say about names: which capitalised words are names."""

    names: frozenset[str]  # folded words written capitalised mid-sentence somewhere
    stems: frozenset[str]  # every word, stemmed
    # Stems of the words in the sources' titles and headings: what the sources are about
    # ("gateway", "embedder", "cache").
    subjects: frozenset[str] = frozenset()

    @classmethod
    def of(cls, texts: Iterable[str], labels: Iterable[str] = ()) -> Vocabulary:
        names: set[str] = set()
        words: set[str] = set()
        for text in texts:
            toks = tokens(text)
            words.update(_fold(t) for t in toks)
            names.update(_fold(t) for t in toks[1:] if t[:1].isupper())
        subjects: set[str] = set()
        for label in labels:
            subjects |= content_stems(label)
        return cls(frozenset(names), frozenset(stem(w) for w in words), frozenset(subjects))


def key_terms(sentence: str, vocabulary: Vocabulary) -> set[str]:
    """The folded terms of ``sentence`` that its support must contain.

    A capitalised first word is a name when the sources write it capitalised elsewhere
    ("Milvus stores ...") or never use it at all ("Kafka stores ..."); otherwise it is an
    ordinary word that starts the sentence ("Keys are ...").
    """
    terms = {" ".join(_fold(code).split()) for code in _CODE_RE.findall(sentence)}
    if _NEGATED_RE.search(sentence):
        terms.add("not")
    toks = tokens(sentence)
    for i, token in enumerate(toks):
        folded = _fold(token)
        if (
            _is_identifier(token)
            or folded in _POLARITY
            or stem(folded) in _UNIT_STEMS
            or (
                token[:1].isupper()
                and folded not in STOPWORDS
                and (i > 0 or folded in vocabulary.names or not _known(folded, vocabulary))
            )
        ):
            terms.add(folded)
    return terms


def _known(word: str, vocabulary: Vocabulary) -> bool:
    """Whether the sources use the word (each part of a hyphenated one) in any case."""
    return all(p in STOPWORDS or stem(p) in vocabulary.stems for p in word.split("-") if p)


def missing_terms(terms: set[str], evidence: str) -> set[str]:
    """The terms not found in ``evidence``: code spans as substrings, others as tokens."""
    folded = " ".join(_fold(evidence).replace("`", " ").split())
    present = {_fold(t) for t in tokens(evidence)}
    if _NEGATED_RE.search(evidence):
        present.add("not")
    stems = {stem(t) for t in present}
    missing: set[str] = set()
    for term in terms:
        if " " in term or not _TOKEN_RE.fullmatch(term):
            if term not in folded:
                missing.add(term)
        elif term not in present and stem(term) not in stems:
            missing.add(term)
    return missing


def content_stems(text: str) -> set[str]:
    return {stem(t) for t in tokens(text) if _fold(t) not in STOPWORDS}


def foreign_words(sentence: str, evidence: str, vocabulary: Vocabulary) -> set[str]:
    """The sentence's subject words (from the sources' titles and headings) this evidence lacks.

    Such a word usually names the wrong thing: "The embedder runs on port 8102" read against
    the LLM service's "... endpoint on port 8102 ...". Other words are more often paraphrase
    ("entry point" for "door"), and are left to the coverage test.
    """
    return (content_stems(sentence) & vocabulary.subjects) - content_stems(evidence)


def longest_new_run(sentence: str, evidence: str) -> int:
    """The most content words in a row (function words skipped) of ``sentence`` that
    ``evidence`` never uses.

    A paraphrase swaps a word here and there; a clause the source never had ("to prevent
    data from being sent too frequently") is a run of new words, however close the whole
    sentence's embedding and its share of shared words are.
    """
    # The words inside a path or identifier count as used: "chat completions" restates
    # `/v1/chat/completions`.
    present = {stem(part) for t in tokens(evidence) for part in (t, *_PART_RE.findall(t))}
    longest = run = 0
    for token in tokens(sentence):
        if _fold(token) in STOPWORDS:
            continue
        run = 0 if stem(token) in present else run + 1
        longest = max(longest, run)
    return longest


def content_coverage(sentence: str, evidence: str) -> float:
    """Share of the sentence's content words (plural-folded) that the evidence uses."""
    words = [stem(t) for t in tokens(sentence) if _fold(t) not in STOPWORDS]
    if not words:
        return 1.0
    present = {stem(t) for t in tokens(evidence)}
    return sum(w in present for w in words) / len(words)


def polarity(text: str) -> set[str]:
    """The polarity words of a text ("never", "only", "not" for any n't)."""
    found = {_fold(t) for t in tokens(text) if _fold(t) in _POLARITY}
    if _NEGATED_RE.search(text):
        found.add("not")
    return found
