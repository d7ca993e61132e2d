"""Console sessions over real HTTP: sign-in, cookie flags, CSRF, expiry, revocation, sign-out."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis

from services.cli.suite import Suite
from services.console.sessions import SessionStore
from tests.conftest import KeyFactory
from tests.integration.conftest import bearer


@asynccontextmanager
async def _signed_in(gateway: str, key: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client holding a fresh session for ``key``, and the session's CSRF token."""
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        yield client, await _sign_in(client, key)


async def _sign_in(client: httpx.AsyncClient, key: str) -> str:
    form = await client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    signed = await client.post("/console/sign-in", data={"api_key": key, "csrf_token": token.group(1)})
    assert signed.status_code == 303 and signed.headers["location"] == "/console/ask"
    cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith("quarry_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    page = await client.get("/console/ask")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


async def test_sign_in_refuses_a_bad_key_and_a_form_from_elsewhere(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=60) as client:
        form = await client.get("/console/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        bad = await client.post("/console/sign-in", data={"api_key": "qk_nope", "csrf_token": token.group(1)})
        assert bad.status_code == 401 and "quarry_session" not in bad.headers.get("set-cookie", "")
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=60) as elsewhere:
        # Login CSRF: a form posted from another site has no sign-in cookie to match.
        forged = await elsewhere.post("/console/sign-in", data={"api_key": "x", "csrf_token": "guess"})
        assert forged.status_code == 403


async def test_the_session_stands_in_for_the_key_with_csrf_on_changes(
    suite: Suite, make_key: KeyFactory, collection_name: str
) -> None:
    key = await make_key({"ingest"})
    async with _signed_in(suite.url("gateway"), key) as (client, csrf):
        assert (await client.get("/v1/collections")).status_code == 200  # a read needs no token
        refused = await client.post("/v1/collections", json={"name": collection_name})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        wrong = await client.post(
            "/v1/collections", json={"name": collection_name}, headers={"x-csrf-token": csrf + "x"}
        )
        assert wrong.status_code == 403
        made = await client.post(
            "/v1/collections", json={"name": collection_name}, headers={"x-csrf-token": csrf}
        )
        assert made.status_code == 201, made.text
        # The session's scopes are the key's: no query scope, no search.
        search = await client.post("/v1/search", json={"query": "q"}, headers={"x-csrf-token": csrf})
        assert search.status_code == 403 and search.json()["error"]["code"] == "insufficient_scope"
        gone = await client.delete(f"/v1/collections/{collection_name}", headers={"x-csrf-token": csrf})
        assert gone.status_code == 200


async def test_revoking_the_key_ends_its_sessions(suite: Suite, make_key: KeyFactory) -> None:
    admin = await make_key({"admin", "ingest"})
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=60) as api:
        created = await api.post(
            "/v1/keys", json={"name": "short", "scopes": ["ingest"]}, headers=bearer(admin)
        )
        secret, key_id = created.json()["key"], created.json()["id"]
        async with _signed_in(suite.url("gateway"), secret) as (client, _):
            assert (await client.get("/v1/collections")).status_code == 200
            assert (await api.delete(f"/v1/keys/{key_id}", headers=bearer(admin))).status_code == 204
            assert (await client.get("/v1/collections")).status_code == 401
            assert (await client.get("/console/collections")).headers["location"] == "/console/sign-in"


async def test_a_session_expires(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = SessionStore(client, ttl_s=1)
        session_id, session = await store.create("0123456789abcdef")
        assert await store.get(session_id) == session
        await asyncio.sleep(1.2)
        assert await store.get(session_id) is None
        again, _ = await store.create("0123456789abcdef")
        await store.end(again)
        assert await store.get(again) is None
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", ["/console/ask", "/console/keys", "/console/status"])
async def test_pages_without_a_session_send_you_to_sign_in(suite: Suite, path: str) -> None:
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=60) as client:
        page = await client.get(path)
        assert page.status_code == 303 and page.headers["location"] == "/console/sign-in"
    async with httpx.AsyncClient(
        base_url=suite.url("gateway"), timeout=60, cookies={"quarry_session": "made-up"}
    ) as stale_client:
        stale = await stale_client.get(path)
        assert stale.status_code == 303
