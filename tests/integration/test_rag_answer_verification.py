"""Verification with the real embedder: wrong facts are rejected, right answers pass.

The sources are every chunk of examples/docs, cut by the real chunker; sentences and
claims are embedded by the suite's embedder service, as rag does. The right answers are
the QA set's references: each in-scope question answered in other words, the way a
strong model would, sometimes from two documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ingest.chunking import Chunker
from ingest.loaders import load_file
from services.cli.answer_eval import load_qa
from services.cli.suite import Suite
from services.common.embeddings_client import EmbeddingsClient
from services.rag.answer.evidence import SentenceVectors
from services.rag.answer.extractive import ExtractPolicy
from services.rag.answer.grounding import Evidence, Grounding
from services.rag.answer.verification import Claim, Verdict, VerifyPolicy
from services.rag.config import RagSettings
from services.rag.retrieval.retriever import Hit

QA = Path(__file__).resolve().parents[2] / "examples" / "qa" / "docs_qa.jsonl"


@pytest.fixture(scope="module")
async def embeddings(suite: Suite) -> AsyncIterator[EmbeddingsClient]:
    client = EmbeddingsClient(suite.url("embedder"))
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def grounding(embeddings: EmbeddingsClient) -> Grounding:
    s = RagSettings()  # the shipped thresholds
    return Grounding(
        SentenceVectors(embeddings.embed, 10_000),
        VerifyPolicy.from_settings(s),
        ExtractPolicy.from_settings(s),
        s.anchor_sentences,
    )


@pytest.fixture(scope="module")
def sources(examples_dir: Path) -> list[Hit]:
    chunker = Chunker()
    hits: list[Hit] = []
    for path in sorted(examples_dir.glob("*.md")):
        for doc in load_file(path, examples_dir).documents:
            for chunk in chunker.split(doc):
                hits.append(
                    Hit(chunk.chunk_id, doc.doc_id, chunk.index, chunk.text, doc.title, path.name, {}, 1.0)
                )
    return hits


@pytest.fixture(scope="module")
async def evidence(grounding: Grounding, sources: list[Hit]) -> Evidence:
    return await grounding.evidence(sources)


def _numbers(sources: list[Hit], docs: list[str]) -> tuple[int, ...]:
    return tuple(n for n, hit in enumerate(sources, start=1) if hit.doc_id in docs)


async def _check(grounding: Grounding, evidence: Evidence, text: str, cited: tuple[int, ...] = ()) -> Verdict:
    return (await grounding.check([Claim(text, cited)], evidence))[0]


@pytest.mark.parametrize(
    "wrong",
    [
        "The gateway listens on port 8102 by default.",  # the wrong port
        "The embedder serves on port 8102.",
        "The embedder service runs on port 8102, which is a server-to-server connection to the LLM.",
        "The gateway forwards questions to the LLM service over HTTP/1.1.",  # the wrong service
        "On a CPU the LLM service runs SmolLM2-360M-Instruct in GGUF format.",  # the wrong model
        "The embedder runs the all-mpnet-base-v2 sentence-transformers model.",
        "The embedder produces vectors of 768 dimensions.",  # the wrong number
        "Keys are stored in Redis as plain text.",  # the opposite
        "Each key is limited to 60 requests per second.",  # the wrong unit
        # A true sentence with a clause the source never had.
        "Each key has its own rate limit in Redis to prevent data from being sent too frequently.",
        "It serves an OpenAI-compatible model, which can be trained on any type of data and produces "
        "vectors with 384 dimensions.",
        "Paris is the capital of France.",  # off topic
        "Bread rises because yeast produces carbon dioxide.",
    ],
)
async def test_wrong_facts_are_not_supported(grounding: Grounding, evidence: Evidence, wrong: str) -> None:
    verdict = await _check(grounding, evidence, wrong)
    assert not verdict.supported, (wrong, verdict.evidence)


async def test_a_right_sentence_is_supported_by_the_sentence_that_says_it(
    grounding: Grounding, evidence: Evidence, sources: list[Hit]
) -> None:
    verdict = await _check(grounding, evidence, "The gateway listens on port 8100 by default.")
    assert verdict.supported and verdict.evidence is not None
    assert "8100" in verdict.evidence.text
    assert sources[verdict.citations[0] - 1].doc_id == "gateway.md"


async def test_citing_the_wrong_source_is_not_support(
    grounding: Grounding, evidence: Evidence, sources: list[Hit]
) -> None:
    right = "The gateway listens on port 8100 by default."
    assert not (await _check(grounding, evidence, right, _numbers(sources, ["llm.md"]))).supported
    assert (await _check(grounding, evidence, right, _numbers(sources, ["gateway.md"]))).supported


async def test_right_answers_in_other_words_pass(
    grounding: Grounding, evidence: Evidence, sources: list[Hit]
) -> None:
    """At least 95% of the references' sentences pass: a strong model is not turned extractive."""
    items = [item for item in load_qa(QA) if item.in_scope]
    claims = [Claim(s["text"], _numbers(sources, s["cites"])) for item in items for s in item.reference]
    verdicts = await grounding.check(claims, evidence)
    failed = [v.text for v in verdicts if not v.supported]
    assert len(claims) >= 40
    assert len(failed) / len(claims) <= 0.05, "\n".join(
        f"{v.text} <- {v.evidence.text if v.evidence else None} ({v.score})"
        for v in verdicts
        if not v.supported
    )


async def test_most_plausible_false_sentences_are_caught(
    grounding: Grounding, evidence: Evidence, sources: list[Hit]
) -> None:
    """The QA set's negatives: wrong numbers, names and negations are caught; some swapped
    roles ("vLLM on a CPU and llama.cpp on a GPU") are not, and the bound says how many."""
    items = [item for item in load_qa(QA) if item.in_scope]
    claims = [Claim(s["text"], _numbers(sources, s["cites"])) for item in items for s in item.negatives]
    verdicts = await grounding.check(claims, evidence)
    passed = sum(v.supported for v in verdicts)
    assert passed / len(claims) <= 0.25, [v.text for v in verdicts if v.supported]


def test_sentence_vectors_are_normalised(evidence: Evidence) -> None:
    norms = np.linalg.norm(evidence.vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3)
