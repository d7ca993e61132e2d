"""Document ids of every awkward kind round-trip through the gateway's path to the ingest API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest

from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.integration.ingest_jobs import finished

AWKWARD_IDS = [
    "a/b",  # sent as a%2Fb
    "a%2Fb",  # sent as a%252Fb: a different document from a/b
    "50%",
    "a b",
    "ü",
    "x" * 200,
    "a?b#c",
    "..",
    "../../other/documents/x",
    "{doc}",
]


def _path(collection: str, doc_id: str) -> str:
    # Every character that could be URL structure encoded, dots too ("..": no dot segment).
    return f"/v1/collections/{collection}/documents/{quote(doc_id, safe='').replace('.', '%2E')}"


@pytest.fixture(params=["gateway", "ingest"])
async def client(
    request: pytest.FixtureRequest, suite: Suite, make_key: KeyFactory, collection_name: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway (a key limited to this test's collection) or of the ingest API."""
    headers = {}
    if request.param == "gateway":
        headers["authorization"] = f"Bearer {await make_key({'ingest'}, {collection_name})}"
    async with httpx.AsyncClient(base_url=suite.url(request.param), headers=headers, timeout=60) as c:
        yield c


async def test_awkward_ids_round_trip_through_create_get_and_delete(
    client: httpx.AsyncClient, collection_name: str
) -> None:
    records = [{"_id": d, "title": f"t{n}", "text": f"Document {n}."} for n, d in enumerate(AWKWARD_IDS)]
    job = await client.post(f"/v1/collections/{collection_name}/documents", json={"documents": records})
    assert job.status_code == 202, job.text
    status = await finished(client, job.json()["job_id"])
    assert (status["state"], status["counts"]["added"], status["errors"]) == ("completed", len(records), [])
    listed = await client.get(f"/v1/collections/{collection_name}/documents")
    assert sorted(d["doc_id"] for d in listed.json()["documents"]) == sorted(AWKWARD_IDS)

    for n, doc_id in enumerate(AWKWARD_IDS):
        got = await client.get(_path(collection_name, doc_id))
        assert got.status_code == 200, (doc_id, got.text)
        assert (got.json()["doc_id"], got.json()["title"]) == (doc_id, f"t{n}")
    for n, doc_id in enumerate(AWKWARD_IDS):
        deleted = await client.delete(_path(collection_name, doc_id))
        assert deleted.status_code == 200, (doc_id, deleted.text)
        assert deleted.json() == {"deleted": doc_id}
        gone = await client.get(_path(collection_name, doc_id))
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "document_not_found"
        # Deleting one id deleted no other (a%2Fb is not a/b), and the collection stands.
        left = await client.get(f"/v1/collections/{collection_name}/documents")
        assert sorted(d["doc_id"] for d in left.json()["documents"]) == sorted(AWKWARD_IDS[n + 1 :])
    await client.delete(f"/v1/collections/{collection_name}")
