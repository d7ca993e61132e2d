"""What an answer shows, as pure logic over given vectors: claims, quotes, verification, settling.

The vectors here are hand-made unit vectors; the real embedder's judgement of meaning is
tested against the running embedder in tests/integration/test_rag_answer_verification.py.
"""

from __future__ import annotations

import numpy as np

from services.rag.answer.evidence import SentenceVectors, SourceSentence, Vectors, source_sentences
from services.rag.answer.extractive import ExtractPolicy, extract, named_sources
from services.rag.answer.grounding import Asked, Evidence, Grounding
from services.rag.answer.key_terms import Vocabulary
from services.rag.answer.verification import Claim, Verdict, VerifyPolicy, claims, verify
from services.rag.retrieval.retriever import Hit

ASKED = "What port does the gateway listen on?"
TEXTS = [
    "The gateway is the only public door into Quarry.",
    "It listens on port 8100 by default and forwards questions to the rag service.",
    "Keys are stored in Redis only as salted hashes.",
    "The embedder serves vectors of 384 dimensions on port 8101.",
]


def _unit(*weights: float) -> Vectors:
    vector = np.zeros(8, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def _evidence() -> Evidence:
    sentences = [
        SourceSentence(1, 0, TEXTS[0], "The Quarry gateway", ""),
        SourceSentence(1, 1, TEXTS[1], "The Quarry gateway", TEXTS[0]),
        SourceSentence(2, 2, TEXTS[2], "API keys", ""),
        SourceSentence(3, 3, TEXTS[3], "The embedder", ""),
    ]
    vectors = np.vstack([_unit(1, 0.2), _unit(0.3, 1), _unit(0, 0, 1), _unit(0, 0, 0, 1)])
    return Evidence(sentences, vectors, Vocabulary.of(TEXTS))


async def _no_embedder(texts: list[str]) -> list[list[float]]:
    raise AssertionError("not called in these tests")


def _check(text: str, vector: Vectors, evidence: Evidence) -> Verdict:
    policy = VerifyPolicy(0.5, 0.5)
    return verify(Claim(text, ()), vector, evidence.sentences, evidence.support, evidence.vocabulary, policy)


def _grounding() -> Grounding:
    return Grounding(SentenceVectors(_no_embedder, 0), VerifyPolicy(0.5, 0.5), ExtractPolicy(0.45, 0.04), 2)


def test_claims_drop_markers_headings_questions_fragments_and_repeats() -> None:
    text = (
        "# Running Quarry [1]\nThe gateway listens on port 8100 [1]. The gateway listens on port 8100. "
        "Question: what port? The LLM service is exposed by the, which uses. Yes. "
        "It runs llama.cpp on a CPU [2][9]."
    )
    assert claims(text, 3) == [
        Claim("The gateway listens on port 8100.", (1,)),
        Claim("It runs llama.cpp on a CPU.", (2,)),
    ]


def test_claims_drop_sentences_cut_off_and_split_run_ons_at_their_markers() -> None:
    text = (
        "Keys are stored in Redis only as salted hashes, never as the secret [4] Cached answers "
        "are keyed by the normalised question [1]. The Quarry gateway Each key has its own rate [3]"
    )
    assert claims(text, 4) == [Claim("Cached answers are keyed by the normalised question.", (1,))]
    closed = 'The engine is called "llama.cpp." The service runs `vLLM` on a GPU.'
    assert [c.text for c in claims(closed, 1)] == [
        'The engine is called "llama.cpp."',
        "The service runs `vLLM` on a GPU.",
    ]


def test_claims_lose_the_punctuation_their_markers_left() -> None:
    text = "It asks the LLM to write an answer, citing them as [1], [2]. It is done by rag [3] ."
    expected = ["It asks the LLM to write an answer.", "It is done by rag."]
    assert [c.text for c in claims(text, 3)] == expected


def test_claims_lose_echoed_titles_and_lead_ins() -> None:
    text = (
        "The rag orchestrator The rag service answers questions [1]. "
        "The answer to this question is: Cached answers are keyed by the question [1]. "
        "The Rag Orchestrator Every ingest bumps the generation [1]. "
        "The rag orchestrator answers from numbered sources [1]."
    )
    assert [c.text for c in claims(text, 1, ["The rag orchestrator"])] == [
        "The rag service answers questions.",
        "Cached answers are keyed by the question.",
        "Every ingest bumps the generation.",
        "The rag orchestrator answers from numbered sources.",
    ]


def test_source_sentences_keep_headings_as_labels_and_resolve_pronouns() -> None:
    hit = Hit(
        "c1", "gateway.md", 0, f"# The gateway\n\n{TEXTS[0]} {TEXTS[1]}", "The Quarry gateway", "g", {}, 1.0
    )
    found = source_sentences([hit])
    assert [s.text for s in found] == TEXTS[:2]
    assert found[1].label == "The Quarry gateway The gateway" and found[1].antecedent == TEXTS[0]
    assert found[1].statement == f"{TEXTS[0]} {TEXTS[1]}"
    assert found[0].antecedent == ""


def test_a_claim_needs_meaning_and_every_specific_of_one_source_sentence() -> None:
    evidence = _evidence()
    policy = VerifyPolicy(0.5, 0.5)
    near_port = _unit(0.3, 1, 0.1)

    def check(text: str, cited: tuple[int, ...] = ()) -> bool:
        verdict = verify(
            Claim(text, cited), near_port, evidence.sentences, evidence.support, evidence.vocabulary, policy
        )
        return verdict.supported

    assert check("The gateway listens on port 8100 by default.")
    assert not check("The gateway listens on port 8102 by default.")  # a wrong number
    assert not check("The gateway forwards questions to the LLM service.")  # a wrong name
    assert not check("The gateway listens on port 8100 by default.", cited=(2,))  # cites the wrong source
    off_topic = verify(
        Claim("Bananas grow in warm places.", ()),
        _unit(0, 0, 0, 0, 1),
        evidence.sentences,
        evidence.support,
        evidence.vocabulary,
        policy,
    )
    assert not off_topic.supported and off_topic.score < 0.5


def test_verified_citations_point_at_the_supporting_source() -> None:
    evidence = _evidence()
    verdict = verify(
        Claim("It listens on port 8100.", ()),
        _unit(0.3, 1),
        evidence.sentences,
        evidence.support,
        evidence.vocabulary,
        VerifyPolicy(0.5, 0.5),
    )
    assert verdict.supported and verdict.citations == (1,) and verdict.evidence is not None
    assert verdict.evidence.text == TEXTS[1]


def test_quotes_are_the_closest_sentences_in_source_order_with_their_antecedent() -> None:
    evidence = _evidence()
    quoted = extract(evidence.sentences, evidence.vectors @ _unit(0.3, 1), ExtractPolicy(0.45, 0.04))
    assert [v.text for v in quoted] == TEXTS[:2]  # "It listens ..." brings its subject
    assert all(v.supported and v.citations == (1,) for v in quoted)
    assert extract(evidence.sentences, evidence.vectors @ _unit(0, 0, 0, 0, 1), ExtractPolicy(0.45)) == []


def test_a_quote_brings_its_paragraph_neighbour_when_that_clears_the_floor_alone() -> None:
    label = "The Quarry gateway Rate limits"
    texts = [
        "Each key has its own rate limit, enforced with a moving window in Redis.",
        "A client over its limit receives HTTP status 429 with a Retry-After header.",
        "Keys are stored in Redis only as salted hashes.",
    ]
    sentences = [
        SourceSentence(1, 0, texts[0], label, ""),
        SourceSentence(1, 1, texts[1], label, ""),
        SourceSentence(1, 2, texts[2], "The Quarry gateway API keys", ""),
    ]
    policy = ExtractPolicy(0.7, 0.08)
    quoted = extract(sentences, np.array([0.9, 1.1, 0.85], dtype=np.float32), policy)
    # The neighbour is far outside the margin but clears the floor; the next paragraph does not come.
    assert [v.text for v in quoted] == texts[:2]
    assert [v.text for v in extract(sentences, np.array([0.6, 1.1, 0.85], dtype=np.float32), policy)] == [
        texts[1]
    ]


def test_a_question_naming_sources_gets_a_quote_from_each_named_one() -> None:
    sentences = [
        SourceSentence(
            1, 0, "On one machine, quarry up starts a Milvus Lite server on port 19539.", "Running Quarry", ""
        ),
        SourceSentence(1, 1, "Press Ctrl-C to stop everything that was started.", "Running Quarry", ""),
        SourceSentence(2, 2, TEXTS[3], "The embedder service", ""),
        SourceSentence(3, 3, "The LLM service serves its endpoint on port 8102.", "The LLM service", ""),
    ]
    question = "Which ports do the embedder and the Milvus Lite server use?"
    named = named_sources(question, sentences)
    assert named == {2}  # "the embedder" names a title; "use" and "ports" name nothing
    scores = np.array([0.9, 0.85, 0.6, 0.55], dtype=np.float32)
    policy = ExtractPolicy(0.75, 0.08, subject_min_relevance=0.5)
    # The embedder's page answers for the embedder, far below the margin, and before the
    # best one's neighbour, which is close but says nothing asked.
    shown = [v.text for v in extract(sentences, scores, ExtractPolicy(0.75, 0.08, 0.0, 0.5, 2), named)]
    assert shown == [sentences[0].text, TEXTS[3]]
    assert [v.text for v in extract(sentences, scores, policy, named)] == [s.text for s in sentences[:3]]
    # Not enabled, or the named page too far from the question: no quote of its own.
    assert TEXTS[3] not in [v.text for v in extract(sentences, scores, ExtractPolicy(0.75, 0.08), named)]
    low = np.array([0.9, 0.85, 0.4, 0.55], dtype=np.float32)
    assert TEXTS[3] not in [v.text for v in extract(sentences, low, policy, named)]
    # A named page adds to an answer; it never makes one.
    assert extract(sentences, scores - 0.3, policy, named) == []


def test_settling_shows_anchored_sentences_else_quotes_else_nothing() -> None:
    grounding = _grounding()
    evidence = _evidence()
    question = _unit(0.3, 1)
    on_topic = _check("The gateway listens on port 8100.", question, evidence)
    wrong = _check("The gateway listens on port 8102.", question, evidence)
    aside = _check("Keys are stored in Redis as salted hashes.", _unit(0, 0, 1), evidence)
    assert on_topic.supported and not wrong.supported and aside.supported

    draft = grounding.settle([on_topic, wrong], Asked(ASKED, question), evidence, "remove")
    assert draft.answered_by == "llm" and draft.shown == [on_topic] and draft.removed == 1

    # True, but not what was asked: the quotes answer instead.
    draft = grounding.settle([aside], Asked(ASKED, question), evidence, "remove")
    assert draft.answered_by == "extractive" and [v.text for v in draft.shown] == TEXTS[:2]
    assert draft.removed == 1

    draft = grounding.settle([wrong], Asked(ASKED, question), evidence, "mark")
    assert draft.answered_by == "llm" and draft.shown == [wrong]

    far = _unit(0, 0, 0, 0, 1)
    assert grounding.settle([wrong], Asked(ASKED, far), evidence, "remove").answered_by == "none"


def test_an_answer_that_drops_every_specific_of_the_closest_sentence_gets_it_quoted() -> None:
    grounding = _grounding()
    evidence = _evidence()
    question = _unit(0.3, 1)

    # Rests on "It listens on port 8100 ...", but says nothing of the port that was asked for.
    vague = _check("It listens on a port and forwards questions to the rag service.", question, evidence)
    assert vague.supported
    draft = grounding.settle([vague], Asked(ASKED, question), evidence, "remove")
    assert draft.answered_by == "extractive" and [v.text for v in draft.shown] == TEXTS[:2]

    # One that keeps the specific stands alone.
    exact = _check("The gateway listens on port 8100 by default.", question, evidence)
    assert grounding.settle([exact], Asked(ASKED, question), evidence, "remove").shown == [exact]


def test_a_sentence_said_twice_on_the_same_support_is_shown_once() -> None:
    grounding = _grounding()
    evidence = _evidence()
    question = _unit(0.3, 1)
    first = _check("The gateway listens on port 8100 by default.", question, evidence)
    again = _check("The gateway listens on port 8100 by default, it does.", question, evidence)
    other = _check("It listens on port 8100 and forwards questions to the rag service.", question, evidence)
    assert first.supported and again.supported and other.supported
    assert first.evidence == again.evidence == other.evidence
    draft = grounding.settle([first, again, other], Asked(ASKED, question), evidence, "remove")
    assert draft.shown == [first, other] and draft.removed == 1
