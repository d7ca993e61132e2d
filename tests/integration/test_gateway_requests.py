"""Queries and searches over HTTP/2 through the suite's real gateway, for keys it has seen and
keys it has not: one window per key with slowapi's headers, the guards and the error envelope,
ids, traces, metrics and access lines."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from services.cli.suite import Suite
from services.common.http_client import create_http2_client
from services.gateway.keys import KeyStore, parse_key
from tests.conftest import KeyFactory
from tests.service_logs import access_line

_SEARCHES = re.compile(
    r'^quarry_http_requests_total\{method="POST",route="/v1/search",service="gateway",status="(\d+)"\}'
    r" ([0-9.]+)$",
    re.M,
)


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http2_client(suite.url("gateway"), timeout_s=120) as client:  # h2c, as apps use
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _searches_counted(gateway: httpx.AsyncClient) -> dict[str, float]:
    """quarry_http_requests_total for the gateway's /v1/search, by status."""
    return {status: float(value) for status, value in _SEARCHES.findall((await gateway.get("/metrics")).text)}


async def test_ids_traces_metrics_and_access_lines_for_a_known_key(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str, suite: Suite
) -> None:
    key = await make_key({"query"})
    search = {"query": "rate limit", "collection": examples, "top_k": 2}
    assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200
    counted_before = await _searches_counted(gateway)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    given = await gateway.post(
        "/v1/search",
        json=search,
        headers={
            **_auth(key),
            "x-request-id": "known-ids-1",
            "traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
        },
    )
    made = await gateway.post("/v1/search", json=search, headers=_auth(key))
    assert (given.status_code, made.status_code) == (200, 200)

    assert given.headers["x-request-id"] == "known-ids-1"
    _, answered_trace, span, _ = given.headers["traceparent"].split("-")
    assert answered_trace == trace_id and span != "b7ad6b7169203331"
    assert re.fullmatch(r"[0-9a-f]{24}", made.headers["x-request-id"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", made.headers["traceparent"])
    assert made.headers["traceparent"].split("-")[1] != trace_id  # a new trace

    counted = await _searches_counted(gateway)
    assert counted.get("200", 0) - counted_before.get("200", 0) == 2
    logs = suite.data_dir / "logs"
    line = access_line(logs / "gateway.log", "known-ids-1")
    assert line is not None, "no access line for the request"
    assert (line["path"], line["status"], line["traceparent"]) == (
        "/v1/search",
        200,
        given.headers["traceparent"],
    )
    assert line["duration_ms"] > 0
    # The id went on to rag with the request.
    rag_line = access_line(logs / "rag.log", "known-ids-1")
    assert rag_line is not None and rag_line["traceparent"].split("-")[1] == trace_id


async def _raw_post(port: int, key: str, request_id: str, framing: bytes, body: bytes) -> tuple[int, bytes]:
    """POST /v1/search over raw HTTP/1.1: an HTTP/2 client stops at the stream the gateway
    closes once it has refused, before it reads the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST /v1/search HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
            f"content-type: application/json\r\nx-request-id: {request_id}\r\n"
        ).encode()
        writer.write(head + framing + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await asyncio.wait_for(reader.readexactly(length), 30)
    finally:
        writer.close()
    return int(status_line.split()[1]), answer


async def test_bodies_over_the_cap_are_413_declared_or_streamed(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str, suite: Suite
) -> None:
    key = await make_key({"query"})
    search = {"query": "q", "collection": examples}
    assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200
    cap = 1_048_576  # the suite's gateway caps JSON bodies at 1 MiB
    # Declared: refused on the header, none of the body sent.
    declared = await _raw_post(suite.ports.gateway, key, "cap-declared", b"content-length: 2000000\r\n", b"")
    # Chunked, no length declared: cut off once more than the cap has arrived. One byte over,
    # in the last chunk, so the gateway has read all that was sent when it answers.
    pieces = [b"x" * 65_536] * (cap // 65_536) + [b"x"]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    streamed = await _raw_post(
        suite.ports.gateway, key, "cap-streamed", b"transfer-encoding: chunked\r\n", chunks
    )
    for name, (status, answer) in (("declared", declared), ("streamed", streamed)):
        assert status == 413, (name, answer)
        body = json.loads(answer)
        assert body["error"] == {
            "code": "payload_too_large",
            "message": f"request body exceeds {cap} bytes",
            "request_id": f"cap-{name}",
        }
    # The key is not held back by its refusals.
    assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200


async def test_a_key_counts_in_one_window_with_the_same_headers(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    key = await make_key({"query"}, rate_limit="4/minute")
    search = {"query": "rate limit", "collection": examples, "top_k": 2}
    answers = [await gateway.post("/v1/search", json=search, headers=_auth(key)) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0", "0"]
    assert {a.headers["x-ratelimit-limit"] for a in answers} == {"4"}
    resets = {float(a.headers["x-ratelimit-reset"]) for a in answers}
    assert max(resets) - min(resets) <= 2  # one window, opened by the first request
    assert answers[1].json()["hits"], "rag's answer is relayed"

    over = answers[-1]
    error = over.json()["error"]
    assert (error["code"], error["message"]) == ("rate_limited", "rate limit exceeded: 4 per 1 minute")
    assert error["request_id"] == over.headers["x-request-id"]
    assert int(over.headers["retry-after"]) >= 1


async def test_a_known_key_gets_the_guards_and_the_error_envelope(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    key = await make_key({"query"}, collections={examples})
    first = await gateway.post("/v1/search", json={"query": "q", "collection": examples}, headers=_auth(key))
    assert first.status_code == 200
    cases = {
        "invalid_json": (b"{not json", 400),
        "invalid_request": (b"[1, 2]", 422),
        "collection_forbidden": (b'{"query": "q", "collection": "someone_else"}', 403),
    }
    for code, (body, status) in cases.items():
        headers = {**_auth(key), "content-type": "application/json", "x-request-id": f"guard-{status}"}
        response = await gateway.post("/v1/search", content=body, headers=headers)
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"] == {
            "code": code,
            "message": response.json()["error"]["message"],
            "request_id": f"guard-{status}",
        }


async def test_a_known_key_lacking_the_scope_or_a_wrong_secret_is_refused(
    gateway: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    ingest_only = await make_key({"ingest"})
    query_key = await make_key({"query"})
    await gateway.get("/v1/collections", headers=_auth(ingest_only))  # both now known to the replica
    await gateway.post("/v1/search", json={"query": "q"}, headers=_auth(query_key))
    refused = [
        await gateway.post("/v1/query", json={"question": "q"}, headers=_auth(ingest_only)),
        await gateway.post("/v1/query", json={"question": "q"}, headers=_auth(query_key[:-4] + "AAAA")),
    ]
    assert [r.status_code for r in refused] == [403, 401]
    assert [r.json()["error"]["code"] for r in refused] == ["insufficient_scope", "invalid_api_key"]


async def test_a_known_key_revoked_meanwhile_is_refused(
    gateway: httpx.AsyncClient, make_key: KeyFactory, redis_url: str, examples: str
) -> None:
    key = await make_key({"query"})
    search = {"query": "rate limit", "collection": examples, "top_k": 2}
    for _ in range(3):
        assert (await gateway.post("/v1/search", json=search, headers=_auth(key))).status_code == 200
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
    again = await gateway.post("/v1/search", json=search, headers=_auth(key))
    assert again.status_code == 401


async def test_streams_over_http2_are_relayed_whole(
    gateway: httpx.AsyncClient, make_key: KeyFactory, examples: str
) -> None:
    """Streamed answers to HTTP/2 clients keep their events, in order."""
    key = await make_key({"query"})
    query = {"question": "How are answers cached?", "collection": examples, "stream": True, "max_tokens": 8}
    streams = [await gateway.post("/v1/query", json=query, headers=_auth(key)) for _ in range(3)]
    for response in streams:
        assert response.status_code == 200, response.text
        assert response.http_version == "HTTP/2"
        assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [
        [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
        for r in streams
    ]
    assert all(k[0] == "sources" and k[-1] == "done" and "token" in k for k in kinds), kinds
    # The 2nd and 3rd replay the 1st answer from rag's cache.
    done = [r.text.rsplit("data: ", 1)[1] for r in streams]
    assert '"cached":true' in done[2].replace(" ", "")
