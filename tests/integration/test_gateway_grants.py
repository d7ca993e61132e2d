"""The authorisation matrix, through the suite's real gateway: every public route × every scope ×
a collection in the key's grant and one outside it, each with its exact status."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.cli.suite import Suite
from services.gateway.keys import SCOPES, KeyStore
from tests.integration.ingest_jobs import finished

DOC = {"_id": "d1", "title": "Grants", "text": "A key reaches only the collections of its grant."}


@dataclass(frozen=True)
class Tenants:
    mine: str  # in every test key's grant
    other: str  # in none
    jobs: dict[str, str]  # collection: a job of it


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as the gateway's OpenAPI names it
    scope: str  # the scopes that grant it, space-separated as in OAuth
    allowed: int  # with the scope, in the grant
    refused: tuple[int, str]  # with the scope, out of the grant
    body: str = ""  # which request body (see _body)
    own: str = ""  # the in-grant case acts on the case's own collection: "new", "empty" or "document"


ROUTES = [
    Route("POST", "/v1/query", "query", 200, (403, "collection_forbidden"), body="query"),
    Route("POST", "/v1/search", "query", 200, (403, "collection_forbidden"), body="search"),
    Route("POST", "/v1/collections", "ingest", 201, (403, "collection_forbidden"), body="name", own="new"),
    Route("GET", "/v1/collections", "ingest", 200, (200, "")),  # the list is cut to the grant
    Route("GET", "/v1/collections/{collection}", "ingest", 200, (403, "collection_forbidden")),
    Route(
        "DELETE", "/v1/collections/{collection}", "ingest", 200, (403, "collection_forbidden"), own="empty"
    ),
    Route(
        "POST", "/v1/collections/{collection}/documents", "ingest", 202, (403, "collection_forbidden"), "docs"
    ),
    Route("GET", "/v1/collections/{collection}/documents", "ingest", 200, (403, "collection_forbidden")),
    Route(
        "GET", "/v1/collections/{collection}/documents/{doc_id}", "ingest", 200, (403, "collection_forbidden")
    ),
    Route(
        "DELETE",
        "/v1/collections/{collection}/documents/{doc_id}",
        "ingest",
        200,
        (403, "collection_forbidden"),
        own="document",
    ),
    Route("GET", "/v1/jobs", "ingest", 200, (200, "")),  # the list is cut to the grant
    Route("GET", "/v1/jobs/{job_id}", "ingest", 200, (403, "collection_forbidden")),
    Route("GET", "/v1/status", "admin ops", 200, (200, "")),  # names no collection
    Route("GET", "/v1/variants", "admin", 200, (200, "")),  # names no collection
    # In the grant: the key's own answer; out of it: another key's answer.
    Route("POST", "/v1/feedback", "query", 200, (404, "answer_not_found"), body="feedback"),
    Route("POST", "/v1/keys", "admin", 201, (403, "grant_exceeded"), body="key"),
    Route("GET", "/v1/keys", "admin", 200, (200, "")),  # the list is cut to the grant
    Route("DELETE", "/v1/keys/{key_id}", "admin", 204, (404, "key_not_found")),
]


@pytest.fixture(scope="module")
async def tenants(suite: Suite) -> AsyncIterator[Tenants]:
    """Two collections, each holding document d1, written through the ingest API."""
    tag = uuid.uuid4().hex[:8]
    mine, other = f"t_grant_mine_{tag}", f"t_grant_other_{tag}"
    async with httpx.AsyncClient(base_url=suite.url("ingest"), timeout=60) as api:
        jobs = {name: await _ingest(api, name) for name in (mine, other)}
        yield Tenants(mine, other, jobs)
        for name in (mine, other):
            await api.delete(f"/v1/collections/{name}")


async def _ingest(api: httpx.AsyncClient, collection: str) -> str:
    job = await api.post(f"/v1/collections/{collection}/documents", json={"documents": [DOC]})
    assert job.status_code == 202, job.text
    assert (await finished(api, job.json()["job_id"]))["state"] == "completed"
    return str(job.json()["job_id"])


def _body(kind: str, collection: str, scope: str) -> dict[str, Any] | None:
    bodies: dict[str, dict[str, Any]] = {
        "query": {
            "question": "What does a key reach?",
            "collection": collection,
            "answer_mode": "extractive",
        },
        "search": {"query": "key grant", "collection": collection},
        "name": {"name": collection},
        "docs": {"documents": [{**DOC, "_id": "d2"}]},
        "key": {"name": "minted", "scopes": [scope], "collections": [collection]},
    }
    return bodies.get(kind)


async def _answer_id(gateway: httpx.AsyncClient, key: str, collection: str) -> str:
    answer = await gateway.post(
        "/v1/query",
        json={"question": "What does a key reach?", "collection": collection, "answer_mode": "extractive"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["answer_id"])


CASES = [
    pytest.param(
        route, scope, in_grant, id=f"{route.method} {route.path} {scope} {'in' if in_grant else 'out'}"
    )
    for route in ROUTES
    for scope in sorted(SCOPES)
    for in_grant in (True, False)
]


@pytest.mark.parametrize(("route", "scope", "in_grant"), CASES)
async def test_authorisation_matrix(
    suite: Suite, redis_url: str, tenants: Tenants, route: Route, scope: str, in_grant: bool
) -> None:
    own = f"t_grant_own_{uuid.uuid4().hex[:10]}"  # this case's collection, in its key's grant
    grant = {tenants.mine, own}
    allowed = scope in route.scope.split()
    acts_on_own = in_grant and allowed and route.own
    collection = own if acts_on_own else tenants.mine if in_grant else tenants.other
    redis = aioredis.Redis.from_url(redis_url)
    store = KeyStore(redis)
    async with (
        httpx.AsyncClient(base_url=suite.url("gateway"), timeout=120) as gateway,
        httpx.AsyncClient(base_url=suite.url("ingest"), timeout=60) as api,
    ):
        try:
            secret, _ = await store.create("matrix", {scope}, grant, "1000/minute")
            if acts_on_own == "empty":
                assert (await api.post("/v1/collections", json={"name": own})).status_code == 201
            if acts_on_own == "document":
                await _ingest(api, own)
            # A key to revoke: within the caller's grant (same scope, its collection), or not.
            _, target = await store.create("target", {scope}, {collection}, "1000/minute")
            params = {
                "collection": collection,
                "doc_id": DOC["_id"],
                "job_id": tenants.jobs.get(collection, "0" * 32),
                "key_id": target.key_id,
            }
            body = _body(route.body, collection, scope)
            if route.body == "feedback":
                asker = (
                    secret
                    if in_grant and allowed
                    else (await store.create("asker", {"query"}, grant, "1000/minute"))[0]
                )
                body = {"answer_id": await _answer_id(gateway, asker, tenants.mine), "rating": "up"}
            response = await gateway.request(
                route.method,
                route.path.format_map(params),
                json=body,
                headers={"authorization": f"Bearer {secret}"},
            )
            if not allowed:
                expected: tuple[int, str] = (403, "insufficient_scope")
            elif in_grant:
                expected = (route.allowed, "")
            else:
                expected = route.refused
            code = response.json()["error"]["code"] if response.status_code >= 400 else ""
            assert (response.status_code, code) == expected, response.text
        finally:
            await api.delete(f"/v1/collections/{own}")
            await redis.aclose()
        # An out-of-grant refusal changed nothing: the other tenant's collection is whole.
        other = await api.get(f"/v1/collections/{tenants.other}/documents/{DOC['_id']}")
        assert other.status_code == 200, other.text


async def test_the_matrix_covers_every_public_route(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=30) as gateway:
        spec = (await gateway.get("/openapi.json")).json()
    public = {(method.upper(), path) for path, operations in spec["paths"].items() for method in operations}
    assert {(r.method, r.path) for r in ROUTES} == {(m, p) for m, p in public if p.startswith("/v1/")}
