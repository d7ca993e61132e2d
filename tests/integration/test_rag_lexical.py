"""BM25 through the product path: ingest writes each chunk's normalised title and words into
the ``lexical`` field, rag puts the query through the same steps. A collection made before the
field existed (BM25 over ``text``) keeps taking writes and answering searches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Suite
from services.common import vector_schema as vs
from services.common.http_client import create_http2_client
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals

# The kinase record's title holds words its text lacks.
RECORDS = [
    {"_id": "kinase", "title": "Kinase inhibition in tumours", "text": "The compound blocked signalling."},
    {
        "_id": "granite",
        "title": "Granite",
        "text": "Granite forms when magma cools slowly deep below the surface.",
    },
]


@pytest.fixture
def milvus(suite: Suite) -> Iterator[Any]:
    client = connect_milvus(suite.milvus_uri)
    yield client
    client.close()


async def _bm25(suite: Suite, collection: str, query: str) -> list[dict[str, Any]]:
    async with create_http2_client(suite.url("rag")) as client:
        response = await client.post(
            "/v1/search", json={"query": query, "collection": collection, "mode": "bm25", "top_k": 5}
        )
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def _write(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))


async def test_bm25_matches_word_forms_and_titles(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite, milvus: Any
) -> None:
    _write(tmp_path)
    report = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert report.added == 2
    [row] = milvus.query(
        collection_name, filter=field_equals(vs.DOC_ID, "granite"), output_fields=[vs.LEXICAL, vs.TEXT]
    )
    assert "magma cool slowli" in row[vs.LEXICAL] and "the" not in row[vs.LEXICAL].split()
    assert "slowly" in row[vs.TEXT]  # what users read is untouched

    # Other forms of the words ("inhibits", "kinases") find the document that has them.
    hits = await _bm25(suite, collection_name, "inhibits kinases")
    assert [h["doc_id"] for h in hits] == ["kinase"]
    assert (await _bm25(suite, collection_name, "cooling magmas"))[0]["doc_id"] == "granite"
    # Only stop words: no term to score, an empty answer rather than an error.
    assert await _bm25(suite, collection_name, "the of and") == []


async def test_a_collection_made_before_the_lexical_field_still_works(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, suite: Suite, milvus: Any
) -> None:
    milvus.create_collection(
        collection_name,
        schema=vs.build_schema(384, lexical=False),
        index_params=vs.build_index_params(milvus),
    )
    _write(tmp_path)
    report = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (report.added, report.failed) == (2, 0)
    assert vs.bm25_input(milvus.describe_collection(collection_name)) == vs.TEXT
    hits = await _bm25(suite, collection_name, "magma cools")
    assert hits and hits[0]["doc_id"] == "granite"
