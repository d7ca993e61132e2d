"""Citations: the answer's [n] markers, else the documented lexical-overlap fallback."""

from __future__ import annotations

from services.rag.attribution import attribute, cited_markers

SOURCES = [
    "The gateway checks API keys and applies a rate limit per key; over the limit it answers 429.",
    "Ingest splits markdown into chunks, embeds them and writes them to Milvus.",
    "The LLM service serves SmolLM2 through an OpenAI-compatible chat completions API.",
]


def test_markers_win_and_out_of_range_ones_are_dropped() -> None:
    result = attribute("Keys are checked [1]. Chunks go to Milvus [2][2]. Nonsense [9].", SOURCES)
    assert result.mode == "marker"
    assert result.numbers == [1, 2]


def test_without_markers_sentences_are_attributed_by_overlap() -> None:
    answer = "Ingest splits markdown into chunks and writes them to Milvus. The sky is blue today."
    result = attribute(answer, SOURCES)
    assert result.mode == "overlap"
    assert result.numbers == [2]


def test_unsupported_answer_cites_nothing() -> None:
    result = attribute("Penguins live in the southern hemisphere.", SOURCES)
    assert result.mode == "none"
    assert result.numbers == []


def test_threshold_is_respected() -> None:
    answer = "The gateway uses keys for penguins and volcanoes."
    assert attribute(answer, SOURCES, min_overlap=0.9).numbers == []
    assert attribute(answer, SOURCES, min_overlap=0.3).numbers == [1]


def test_cited_markers() -> None:
    assert cited_markers("see [3] and [1] and [3]", 3) == [1, 3]
    assert cited_markers("see [0] and [4]", 3) == []
