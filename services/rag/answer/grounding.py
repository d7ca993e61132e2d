"""From sources and (optionally) generated text to the sentences an app may show.

Three outcomes, in order of preference:
- the LLM's sentences that a source supports (``answered_by="llm"``);
- source sentences quoted verbatim (``"extractive"``): asked for, or because the LLM is
  down, or because none of its sentences survived verification;
- no answer (``"none"``): no passage is relevant enough, or no sentence is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.rag.answer.answer_type import expected_form, fits
from services.rag.answer.evidence import SentenceVectors, SourceSentence, Vectors, source_sentences
from services.rag.answer.extractive import ExtractPolicy, extract, named_sources
from services.rag.answer.key_terms import (
    Vocabulary,
    content_coverage,
    content_stems,
    key_terms,
    missing_terms,
)
from services.rag.answer.verification import Claim, Verdict, VerifyPolicy, claims, verify
from services.rag.retrieval.retriever import Hit

AnsweredBy = Literal["llm", "extractive", "none"]
Unsupported = Literal["remove", "mark"]
NO_ANSWER = "The documents don't answer this."
# Share of words two sentences on the same support must share to count as one said twice.
_RESTATED = 0.8
# Taken off the score of a sentence without the form the question asks for (a number, a
# version): it ranks below every sentence that has it, and below any floor.
_UNFIT = 2.0


@dataclass(frozen=True)
class Evidence:
    sentences: list[SourceSentence]
    vectors: Vectors  # each sentence read in its context: for ranking against the question
    vocabulary: Vocabulary
    # Each sentence alone, when claims are to be checked: a claim restating a sentence
    # matches it better without the title and the sentence before.
    plain: Vectors | None = None
    titles: frozenset[str] = frozenset()  # the sources' titles, as a small model echoes them

    @property
    def support(self) -> list[Vectors]:
        return [self.vectors] if self.plain is None else [self.vectors, self.plain]


@dataclass(frozen=True)
class Asked:
    """The question, as written and as embedded."""

    text: str
    vector: Vectors

    @property
    def form(self) -> re.Pattern[str] | None:
        """What an answer must hold ("How many ...?": a number), if the question says."""
        return expected_form(self.text)


@dataclass
class Draft:
    shown: list[Verdict]
    answered_by: AnsweredBy
    removed: int = 0
    checked: list[Verdict] = field(default_factory=list)  # every generated sentence, shown or not

    @property
    def answerable(self) -> bool:
        return self.answered_by != "none"


def relevance(sources: list[Hit]) -> float | None:
    """The best raw cosine among the sources (None when none was dense-ranked)."""
    scores = [hit.dense_score for hit in sources if hit.dense_score is not None]
    return max(scores) if scores else None


def question_coverage(question: str, sources: list[Hit]) -> float:
    """Share of the question's content words that the sources use at all.

    Embeddings place "What license is Quarry released under?" near any page about Quarry;
    that no source says "license" is the plainer sign that none answers it.
    """
    return content_coverage(question, " ".join(f"{hit.title} {hit.text}" for hit in sources))


class Grounding:
    def __init__(
        self,
        vectors: SentenceVectors,
        verify_policy: VerifyPolicy,
        extract_policy: ExtractPolicy,
        anchor_sentences: int,
    ) -> None:
        self._vectors = vectors
        self.verify_policy = verify_policy
        self.extract_policy = extract_policy
        self.anchor_sentences = anchor_sentences

    async def evidence(self, sources: list[Hit], for_claims: bool = True) -> Evidence:
        """The sources' sentences and vectors; ``for_claims`` adds what checking claims needs."""
        sentences = source_sentences(sources)
        texts = [s.embedded for s in sentences]
        if for_claims:
            texts += [s.text for s in sentences]
        vectors = await self._vectors.of(texts)
        vocabulary = Vocabulary.of((s.text for s in sentences), {s.label for s in sentences})
        titles = frozenset(hit.title for hit in sources if hit.title)
        if not for_claims:
            return Evidence(sentences, vectors, vocabulary, titles=titles)
        return Evidence(sentences, vectors[: len(sentences)], vocabulary, vectors[len(sentences) :], titles)

    def scores(self, asked: Asked, evidence: Evidence) -> Vectors:
        """How close each source sentence is to the question: the cosine of the sentence read in
        its context, plus the weighted share of the question's words it (with its title, heading
        and antecedent) uses. Embeddings of long sentences blur their parts; a sentence that
        uses the question's own words ("Redis", "port") is more often the answer. A sentence
        without the form the question asks for ("How many ...?": a number) ranks last. Quotes,
        anchors and the prompt's sentences are all ranked by this."""
        weight = self.extract_policy.lexical_weight
        windows = [f"{s.label} {s.statement}" for s in evidence.sentences]
        boost = [
            weight * content_coverage(asked.text, window) - (0.0 if fits(asked.form, s.text) else _UNFIT)
            for s, window in zip(evidence.sentences, windows, strict=True)
        ]
        return evidence.vectors @ asked.vector + np.array(boost, dtype=np.float32)

    def answerable(self, asked: Asked, evidence: Evidence) -> bool:
        """Whether any source sentence is close enough to quote: when none is, nothing generated
        from these sources can answer either, and the LLM is not asked."""
        return bool(self.extractive(asked, evidence).shown)

    def extractive(self, asked: Asked, evidence: Evidence) -> Draft:
        if not evidence.sentences:
            return Draft([], "none")
        named = named_sources(asked.text, evidence.sentences)
        quoted = extract(evidence.sentences, self.scores(asked, evidence), self.extract_policy, named)
        return Draft(quoted, "extractive" if quoted else "none")

    async def check(self, found: list[Claim], evidence: Evidence) -> list[Verdict]:
        """Verdicts for generated sentences, embedded in one call."""
        if not found:
            return []
        vectors = await self._vectors.of([c.statement for c in found])
        return [self.check_one(c, v, evidence) for c, v in zip(found, vectors, strict=True)]

    def check_one(self, claim: Claim, vector: Vectors, evidence: Evidence) -> Verdict:
        if not evidence.sentences:
            return Verdict(claim.text, claim.cited, False, 0.0, None)
        return verify(
            claim, vector, evidence.sentences, evidence.support, evidence.vocabulary, self.verify_policy
        )

    async def generated(
        self, text: str, n_sources: int, asked: Asked, evidence: Evidence, unsupported: Unsupported
    ) -> Draft:
        checked = await self.check(claims(text, n_sources, evidence.titles), evidence)
        return self.settle(checked, asked, evidence, unsupported)

    def excerpts(self, asked: Asked, evidence: Evidence, count: int) -> dict[int, list[str]]:
        """The ``count`` source sentences closest to the question (each with its antecedent when
        it opens with a pronoun), by source number, in source order: a prompt of these is short,
        and keeps a small model on what was asked."""
        scores = self.scores(asked, evidence)
        picked: set[int] = set()
        for i in np.argsort(-scores, kind="stable")[:count]:
            picked.add(int(i))
            sentence = evidence.sentences[i]
            if sentence.opens_with_pronoun and i > 0 and evidence.sentences[i - 1].n == sentence.n:
                picked.add(int(i) - 1)
        found: dict[int, list[str]] = {}
        for i in sorted(picked):
            found.setdefault(evidence.sentences[i].n, []).append(evidence.sentences[i].text)
        return found

    def anchors(self, asked: Asked, evidence: Evidence) -> tuple[int, ...]:
        """Positions of the source sentences closest to the question.

        Supported is not enough: a small model often restates a true sentence that does not
        answer the question. A generated answer stands only when one of its sentences rests
        on one of these; otherwise the quotes answer better.
        """
        if not evidence.sentences:
            return ()
        order = np.argsort(-self.scores(asked, evidence), kind="stable")[: self.anchor_sentences]
        return tuple(evidence.sentences[i].position for i in order)

    @staticmethod
    def anchored(verdict: Verdict, anchors: tuple[int, ...], asked: Asked) -> bool:
        """Supported by one of the anchors, and in the form the question asks for."""
        return (
            verdict.supported
            and verdict.evidence is not None
            and verdict.evidence.position in anchors
            and fits(asked.form, verdict.text)
        )

    def admit(self, asked: Asked, evidence: Evidence, unsupported: Unsupported) -> Admission:
        return Admission(self, asked, evidence, unsupported)

    def settle(
        self, checked: list[Verdict], asked: Asked, evidence: Evidence, unsupported: Unsupported
    ) -> Draft:
        """What to show of a whole generated answer (see :class:`Admission`)."""
        admission = self.admit(asked, evidence, unsupported)
        for verdict in checked:
            admission.offer(verdict)
        return admission.finish()

    @staticmethod
    def eligible(
        verdict: Verdict,
        asked: Asked,
        evidence: Evidence,
        anchors: tuple[int, ...],
        earlier: list[Verdict],
    ) -> bool:
        """Whether a generated sentence may be shown after the ``earlier`` ones: supported, not a
        restatement of one of them, and, when it rests on the source sentence closest to the
        question, keeping at least one specific of it the question did not already name. "The
        LLM service runs on a CPU." for "Which model does it run on a CPU?", resting on "On a CPU
        it runs llama.cpp with SmolLM2-135M-Instruct ...", is true and says nothing: the quote
        answers instead."""
        if not verdict.supported or any(_restates(verdict, before) for before in earlier):
            return False
        closest = verdict.evidence
        if closest is None or not anchors or closest.position != anchors[0]:
            return True
        specifics = key_terms(closest.text, evidence.vocabulary) - key_terms(asked.text, evidence.vocabulary)
        return not specifics or missing_terms(specifics, verdict.text) != specifics


class Admission:
    """Generated sentences as they come: which may be shown now, and at the end the answer.

    One rule for a stream and a whole answer alike. What is shown: every generated sentence
    (``mark``); or the ones that may be shown (:meth:`Grounding.eligible`), held until one of
    them is anchored, with the quotes after them when none rests on the closest source
    sentence; or else the quotes (or no answer).
    """

    def __init__(
        self, grounding: Grounding, asked: Asked, evidence: Evidence, unsupported: Unsupported
    ) -> None:
        self._grounding = grounding
        self._asked = asked
        self._evidence = evidence
        self._mark = unsupported == "mark"
        self._anchors = grounding.anchors(asked, evidence)
        self._anchored = self._mark
        self.checked: list[Verdict] = []
        self._kept: list[Verdict] = []  # may be shown
        self._held: list[Verdict] = []  # may be shown, waiting for a sentence that answers the question

    def offer(self, verdict: Verdict) -> list[Verdict]:
        """Takes the next generated sentence; gives back those to show now, in order."""
        self.checked.append(verdict)
        if Grounding.eligible(verdict, self._asked, self._evidence, self._anchors, self._kept):
            self._kept.append(verdict)
            self._held.append(verdict)
            self._anchored = self._anchored or Grounding.anchored(verdict, self._anchors, self._asked)
        elif self._mark:
            self._held.append(verdict)
        if not self._anchored:
            return []
        ready, self._held = self._held, []
        return ready

    def finish(self) -> Draft:
        """The answer: everything offered was shown already when it stands, quotes follow or replace it."""
        checked, kept, anchors = self.checked, self._kept, self._anchors
        if self._mark and checked:
            return Draft(list(checked), "llm", 0, checked)
        quotes = self._grounding.extractive(self._asked, self._evidence)
        if any(Grounding.anchored(v, anchors, self._asked) for v in kept):
            used = {v.evidence.position for v in kept if v.evidence is not None}
            extra = (
                []
                if anchors[0] in used
                else [q for q in quotes.shown if q.evidence and q.evidence.position not in used]
            )
            return Draft(kept + extra, "llm", len(checked) - len(kept), checked)
        return Draft(quotes.shown, quotes.answered_by, len(checked), checked)


def _restates(verdict: Verdict, before: Verdict) -> bool:
    """Same support, and nearly the same words (a small model repeats itself)."""
    if verdict.evidence is None or before.evidence is None or verdict.evidence != before.evidence:
        return False
    mine, theirs = content_stems(verdict.text), content_stems(before.text)
    return len(mine & theirs) >= _RESTATED * len(mine | theirs)


def as_vector(values: list[float]) -> Vectors:
    return np.asarray(values, dtype=np.float32)
