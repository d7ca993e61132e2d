"""The express lane (known keys on /v1/query and /v1/search, past FastAPI's routing) through the
suite's real gateway: it counts in slowapi's window with slowapi's headers, keeps the app's
guards and error envelope, and only takes keys the replica has admitted before."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from services.cli.suite import Suite
from services.common.http_client import create_http2_client
from services.gateway.keys import KeyStore, parse_key
from tests.conftest import KeyFactory

_LANE = re.compile(
    r'^quarry_gateway_express_requests_total\{ahead="(true|false)",route="(/v1/\w+)"\} ([0-9.]+)$', re.M
)
_ABANDONED = re.compile(r"^quarry_gateway_abandoned_ahead_total ([0-9.]+)$", re.M)


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http2_client(suite.url("gateway"), timeout_s=120) as client:  # h2c, as apps use
        yield client


async def _lane_count(gateway: httpx.AsyncClient, route: str, ahead: str | None = None) -> float:
    """Requests the lane served on ``route``; ``ahead``: only those sent ahead ("true") or not."""
    metrics = (await gateway.get("/metrics")).text
    return sum(
        float(value)
        for sent_ahead, path, value in _LANE.findall(metrics)
        if path == route and ahead in (None, sent_ahead)
    )


async def _abandoned(gateway: httpx.AsyncClient) -> float:
    return sum(float(v) for v in _ABANDONED.findall((await gateway.get("/metrics")).text))


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_known_key_takes_the_lane_in_the_same_window_with_the_same_headers(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    key = await make_key({"query"}, rate_limit="4/minute")
    search = {"query": "rate limit", "collection": examples, "top_k": 2}
    before = await _lane_count(gateway, "/v1/search")
    ahead_before = await _lane_count(gateway, "/v1/search", "true")
    answers = [await gateway.post("/v1/search", json=search, headers=_auth(key)) for _ in range(5)]
    # The first request reads the unseen key alone (FastAPI route); the next four take the lane.
    assert await _lane_count(gateway, "/v1/search") - before == 4
    # The 3rd and 4th go to rag while being admitted: the 2nd's answer left room for two. The
    # 5th does not, the 4th's answer having left none, and is refused without asking rag.
    assert await _lane_count(gateway, "/v1/search", "true") - ahead_before == 2
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0", "0"]
    assert {a.headers["x-ratelimit-limit"] for a in answers} == {"4"}
    resets = {float(a.headers["x-ratelimit-reset"]) for a in answers}
    assert max(resets) - min(resets) <= 2  # one window, opened by the first request
    assert answers[1].json()["hits"], "the lane relays rag's answer"

    over = answers[-1]
    error = over.json()["error"]
    assert (error["code"], error["message"]) == ("rate_limited", "rate limit exceeded: 4 per 1 minute")
    assert error["request_id"] == over.headers["x-request-id"]
    assert int(over.headers["retry-after"]) >= 1


async def test_the_lane_keeps_the_guards_and_the_error_envelope(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    key = await make_key({"query"}, collections={examples})
    first = await gateway.post("/v1/search", json={"query": "q", "collection": examples}, headers=_auth(key))
    assert first.status_code == 200
    before = await _lane_count(gateway, "/v1/search")
    cases = {
        "invalid_json": (b"{not json", 400),
        "invalid_request": (b"[1, 2]", 422),
        "collection_forbidden": (b'{"query": "q", "collection": "someone_else"}', 403),
    }
    for code, (body, status) in cases.items():
        headers = {**_auth(key), "content-type": "application/json", "x-request-id": f"lane-{status}"}
        response = await gateway.post("/v1/search", content=body, headers=headers)
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"] == {
            "code": code,
            "message": response.json()["error"]["message"],
            "request_id": f"lane-{status}",
        }
    assert await _lane_count(gateway, "/v1/search") - before == 3


async def test_a_key_lacking_the_scope_or_a_wrong_secret_never_takes_the_lane(
    gateway: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    ingest_only = await make_key({"ingest"})
    query_key = await make_key({"query"})
    await gateway.get("/v1/collections", headers=_auth(ingest_only))  # both now known to the replica
    await gateway.post("/v1/search", json={"query": "q"}, headers=_auth(query_key))
    before = await _lane_count(gateway, "/v1/query")
    refused = [
        await gateway.post("/v1/query", json={"question": "q"}, headers=_auth(ingest_only)),
        await gateway.post("/v1/query", json={"question": "q"}, headers=_auth(query_key[:-4] + "AAAA")),
    ]
    assert [r.status_code for r in refused] == [403, 401]
    assert [r.json()["error"]["code"] for r in refused] == ["insufficient_scope", "invalid_api_key"]
    assert await _lane_count(gateway, "/v1/query") == before


async def test_a_request_sent_ahead_for_a_key_revoked_meanwhile_is_refused(
    gateway: httpx.AsyncClient, make_key: KeyFactory, redis_url: str, examples: str
) -> None:
    """The replica predicted admission from its last record; Redis says revoked: 401, rag's
    call is cancelled and nothing of its answer reaches the client."""
    key = await make_key({"query"})
    search = {"query": "rate limit", "collection": examples, "top_k": 2}
    for _ in range(3):  # route, lane, lane sent ahead
        assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200
    ahead_before = await _lane_count(gateway, "/v1/search", "true")
    abandoned_before = await _abandoned(gateway)
    parsed = parse_key(key)
    assert parsed is not None
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await KeyStore(client).revoke(parsed[0])
    finally:
        await client.aclose()

    refused = await gateway.post("/v1/search", json=search, headers=_auth(key))
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert "hits" not in refused.json()
    assert await _lane_count(gateway, "/v1/search", "true") - ahead_before == 1
    assert await _abandoned(gateway) - abandoned_before == 1
    # The replica forgot the key: the next try reads the record alone, and is refused again.
    again = await gateway.post("/v1/search", json=search, headers=_auth(key))
    assert again.status_code == 401
    assert await _lane_count(gateway, "/v1/search", "true") - ahead_before == 1


async def test_a_stream_sent_ahead_is_relayed_whole(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    """A streamed answer relayed while its key was admitted keeps its events, in order."""
    key = await make_key({"query"})
    query = {"question": "How are answers cached?", "collection": examples, "stream": True, "max_tokens": 8}
    ahead_before = await _lane_count(gateway, "/v1/query", "true")
    streams = [await gateway.post("/v1/query", json=query, headers=_auth(key)) for _ in range(3)]
    # route, lane, lane sent ahead; the 2nd and 3rd replay the 1st answer from rag's cache.
    assert await _lane_count(gateway, "/v1/query", "true") - ahead_before == 1
    for response in streams:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [
        [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
        for r in streams
    ]
    assert all(k[0] == "sources" and k[-1] == "done" and "token" in k for k in kinds), kinds
    done = [r.text.rsplit("data: ", 1)[1] for r in streams]
    assert '"cached":true' in done[2].replace(" ", "")


async def test_bad_input_sent_ahead_gets_the_same_json_errors(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    """A key with room in its window takes the ahead way: bad bodies are still 4xx JSON, not 500."""
    key = await make_key({"query"}, collections={examples})
    search = {"query": "q", "collection": examples}
    cases = {
        "invalid_json": (b"{not json", 400),
        "invalid_request": (b"[1, 2]", 422),
        "collection_forbidden": (b'{"query": "q", "collection": "someone_else"}', 403),
    }
    for code, (body, status) in cases.items():
        for _ in range(2):  # until a lane answer has shown room (a refusal forgets it): then ahead
            assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200
        ahead_before = await _lane_count(gateway, "/v1/search", "true")
        headers = {**_auth(key), "content-type": "application/json", "x-request-id": f"ahead-{status}"}
        response = await gateway.post("/v1/search", content=body, headers=headers)
        assert await _lane_count(gateway, "/v1/search", "true") - ahead_before == 1, code
        assert response.status_code == status, (code, response.text)
        error = response.json()["error"]
        assert (error["code"], error["request_id"]) == (code, f"ahead-{status}")
