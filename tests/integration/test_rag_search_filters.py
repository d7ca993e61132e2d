"""/v1/search against the real suite: modes, structured filters with hostile values, errors.

Rows are written straight into a real Milvus Lite collection with the ingest schema and
vectors from the real embedder, so the doc ids and metadata can hold hostile strings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.cli.suite import Suite
from services.common import vector_schema as vs
from services.common.embeddings_client import EmbeddingsClient
from services.common.http_client import create_http2_client
from services.common.milvus_connect import connect_milvus

HOSTILE_IDS = [
    'x" or doc_id != "',
    "back\\slash\\",
    '\\") or (1 == 1',
    "é\u202e\uff02ʺ fullwidth",
    "tick` or `1",
    "plain",
]
DOCS: list[dict[str, Any]] = [
    {
        vs.DOC_ID: doc_id,
        vs.TEXT: text,
        vs.METADATA: {"lang": lang, "year": year, "draft": year % 2 == 0},
    }
    for doc_id, text, lang, year in zip(
        HOSTILE_IDS,
        [
            "Granite is an igneous rock formed from slowly cooled magma.",
            "Sourdough bread rises because wild yeast ferments the dough.",
            "The violin has four strings tuned in perfect fifths.",
            "Penguins cannot fly but swim with great agility underwater.",
            "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
            "Quarry retrieval fuses dense vectors with BM25 rankings.",
        ],
        ["en", "en", "de", "fr", "en", "de"],
        [2019, 2020, 2021, 2022, 2023, 2024],
        strict=True,
    )
]


@pytest.fixture(scope="module")
async def search_collection(suite: Suite) -> AsyncIterator[str]:

    name = "t_search_filters"
    embeddings = EmbeddingsClient(suite.url("embedder"))
    vectors = await embeddings.embed([d[vs.TEXT] for d in DOCS])
    await embeddings.aclose()
    client = connect_milvus(suite.milvus_uri)
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(
        name, schema=vs.build_schema(len(vectors[0])), index_params=vs.build_index_params(client)
    )
    client.insert(
        name,
        [
            vs.with_lexical(
                {
                    **doc,
                    vs.CHUNK_ID: f"c{i}",
                    vs.DOC_HASH: "h",
                    vs.CHUNK_INDEX: 0,
                    vs.TITLE: f"title {i}",
                    vs.SOURCE: f"src/{i}.md",
                    vs.DENSE: vector,
                }
            )
            for i, (doc, vector) in enumerate(zip(DOCS, vectors, strict=True))
        ],
    )
    yield name
    client.drop_collection(name)
    client.close()


async def _search(suite: Suite, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with create_http2_client(suite.url("rag")) as client:
        response = await client.post("/v1/search", json=body)
    assert response.http_version == "HTTP/2"
    return response.status_code, response.json()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
async def test_each_mode_finds_the_matching_document_first(
    suite: Suite, search_collection: str, mode: str
) -> None:
    status, body = await _search(
        suite,
        {"query": "why does sourdough bread rise with yeast", "collection": search_collection, "mode": mode},
    )
    assert status == 200, body
    assert body["mode"] == mode
    assert body["hits"][0]["doc_id"] == "back\\slash\\"
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    scores = [h["score"] for h in body["hits"]]
    if mode != "bm25":  # fused and cosine scores grow with relevance
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("doc_id", HOSTILE_IDS)
async def test_hostile_values_match_exactly_their_own_row(
    suite: Suite, search_collection: str, doc_id: str
) -> None:
    status, body = await _search(
        suite,
        {"query": "anything at all", "collection": search_collection, "filters": {"doc_id": {"eq": doc_id}}},
    )
    assert status == 200, body
    assert [h["doc_id"] for h in body["hits"]] == [doc_id]


async def test_hostile_values_in_lists_and_ne(suite: Suite, search_collection: str) -> None:
    wanted = HOSTILE_IDS[:3]
    status, body = await _search(
        suite,
        {
            "query": "rock",
            "collection": search_collection,
            "top_k": 20,
            "filters": {"doc_id": {"in": wanted}},
        },
    )
    assert status == 200, body
    assert sorted(h["doc_id"] for h in body["hits"]) == sorted(wanted)
    status, body = await _search(
        suite,
        {
            "query": "rock",
            "collection": search_collection,
            "top_k": 20,
            "filters": {"doc_id": {"ne": HOSTILE_IDS[0]}},
        },
    )
    assert status == 200, body
    assert sorted(h["doc_id"] for h in body["hits"]) == sorted(HOSTILE_IDS[1:])


@pytest.mark.parametrize(
    "filters",
    [
        {"metadata.lang": {"eq": "en"}},
        {"metadata.lang": {"in": ["de", "fr"]}},
        {"metadata.year": {"gte": 2021, "lt": 2024}},
        {"metadata.draft": {"eq": True}, "metadata.lang": {"ne": "en"}},
        {"source": {"in": ["src/0.md", "src/5.md"]}, "metadata.year": {"gt": 2019.5}},
        {"metadata.lang": {"eq": 'en" or "1" == "1'}},
    ],
)
async def test_metadata_filters_select_the_right_rows(
    suite: Suite, search_collection: str, filters: dict[str, dict[str, Any]]
) -> None:
    status, body = await _search(
        suite, {"query": "science", "collection": search_collection, "top_k": 20, "filters": filters}
    )
    assert status == 200, body
    expected = sorted(d[vs.DOC_ID] for i, d in enumerate(DOCS) if _matches(i, d, filters))
    assert sorted(h["doc_id"] for h in body["hits"]) == expected


def _matches(index: int, doc: dict[str, Any], filters: dict[str, dict[str, Any]]) -> bool:
    """The filter semantics, evaluated in Python as the oracle."""
    checks: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "in": lambda a, b: a in b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    for name, ops in filters.items():
        value = doc[vs.METADATA][name.split(".", 1)[1]] if name.startswith("metadata.") else f"src/{index}.md"
        if not all(checks[op](value, arg) for op, arg in ops.items()):
            return False
    return True


@pytest.mark.parametrize(
    "filters",
    [
        {"doc_id": {"eq": "nul\x00byte"}},
        {"doc_id": {"eq": "new\nline"}},
        {"text": {"eq": "x"}},
        {"doc_id) or (1 == 1": {"eq": "x"}},
        {'metadata.a"] or metadata["b': {"eq": "x"}},
        {"doc_id": {"regex": ".*"}},
        {"doc_id": {"gt": 1}},
        {"metadata.year": {"gt": "2020"}},
        {"doc_id": {"eq": {"$ne": None}}},
        {"doc_id": {"in": []}},
    ],
)
async def test_bad_filters_are_422_envelopes(
    suite: Suite, search_collection: str, filters: dict[str, Any]
) -> None:
    status, body = await _search(suite, {"query": "q", "collection": search_collection, "filters": filters})
    assert status == 422, body
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["request_id"]


async def test_lone_surrogate_is_refused_not_a_500(suite: Suite, search_collection: str) -> None:
    raw = (
        b'{"query": "q", "collection": "%s", "filters": {"doc_id": {"eq": "\\ud800"}}}'
        % search_collection.encode()
    )
    async with create_http2_client(suite.url("rag")) as client:
        response = await client.post("/v1/search", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


async def test_missing_collection_and_bad_mode(suite: Suite) -> None:
    status, body = await _search(suite, {"query": "q", "collection": "t_does_not_exist_zz"})
    assert status == 404 and body["error"]["code"] == "collection_not_found"
    status, body = await _search(suite, {"query": "q", "mode": "fuzzy"})
    assert status == 422 and body["error"]["code"] == "invalid_request"


async def test_concurrent_searches_each_get_their_own_results(suite: Suite, search_collection: str) -> None:
    """Searches batched into shared Milvus calls still answer each caller with its own hits."""
    bodies = [
        {"query": doc[vs.TEXT], "collection": search_collection, "mode": mode, "top_k": 1}
        for doc in DOCS
        for mode in ("dense", "bm25", "hybrid")
    ] * 3
    results = await asyncio.gather(*(_search(suite, body) for body in bodies))
    for body, (status, answer) in zip(bodies, results, strict=True):
        assert status == 200, answer
        expected = next(d[vs.DOC_ID] for d in DOCS if d[vs.TEXT] == body["query"])
        assert [h["doc_id"] for h in answer["hits"]] == [expected]


async def test_query_endpoint_applies_filters(suite: Suite, search_collection: str) -> None:
    """/v1/query retrieves through the same filters: its sources are the filtered rows only."""
    body = {
        "question": "Which rock forms from magma?",
        "collection": search_collection,
        "top_k": 3,
        "max_tokens": 8,
        "filters": {"metadata.lang": {"eq": "fr"}},
    }
    async with create_http2_client(suite.url("rag"), timeout_s=120) as client:
        streamed = await client.post("/v1/query", json={**body, "stream": True})
        plain = await client.post("/v1/query", json=body)
    assert streamed.status_code == 200, streamed.text
    events = [block.split("\n", 1) for block in streamed.text.split("\n\n") if block.startswith("event: ")]
    sources = next(
        json.loads(data.removeprefix("data: ")) for head, data in events if head == "event: sources"
    )
    assert {s["doc_id"] for s in sources["sources"]} == {HOSTILE_IDS[3]}
    assert plain.status_code == 200, plain.text
    assert {c["doc_id"] for c in plain.json()["citations"]} <= {HOSTILE_IDS[3]}
