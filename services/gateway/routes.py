"""Public routes of the gateway: query and search to rag, collections and jobs to ingest, keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Request, Response

from services.common.disconnect import cancel_when, disconnected
from services.common.errors import APIError
from services.common.event_stream import EVENT_STREAM
from services.gateway.auth import check_collection, require_scope
from services.gateway.keys import ApiKey, KeyStore
from services.gateway.openapi import scoped
from services.gateway.paths import path_format, upstream_path
from services.gateway.proxy import Reply, Upstream
from services.gateway.quota import Metering
from services.gateway.ratelimit import limited
from services.gateway.schemas import KeyCreate, KeyCreated, KeyInfo
from services.gateway.suite_status import StatusBoard
from services.gateway.usage import DoneEvents, tokens_in_body
from services.gateway.wire import QUERY_BODY, SEARCH_BODY, json_body

DEGRADED_HEADER = "x-quarry-degraded"
# rag learns who asked from this header alone (rag is reached through the gateway only).
KEY_ID_HEADER = "x-quarry-key-id"
_JSON = "application/json"
# A cached answer is back sooner than this: only a slower call gets a watch on its client.
_WATCH_AFTER_S = 0.005

# (method, path, summary) of every ingest API route the gateway exposes (scope: ingest).
INGEST_ROUTES = (
    ("POST", "/v1/collections", "Create a collection"),
    ("GET", "/v1/collections", "List the collections this key may use"),
    ("GET", "/v1/collections/{collection}", "Describe a collection"),
    ("DELETE", "/v1/collections/{collection}", "Drop a collection"),
    ("POST", "/v1/collections/{collection}/documents", "Add documents (multipart files or JSON records)"),
    ("GET", "/v1/collections/{collection}/documents", "List a collection's documents"),
    ("GET", "/v1/collections/{collection}/documents/{doc_id:path}", "Describe a document"),
    ("DELETE", "/v1/collections/{collection}/documents/{doc_id:path}", "Delete a document"),
    ("GET", "/v1/jobs", "List ingest jobs (filters: collection, repeatable; state)"),
    ("GET", "/v1/jobs/{job_id}", "Follow an ingest job"),
)


async def _json_object(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The request body, raw and parsed; 400/422 unless it is one JSON object."""
    body = await request.body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # bad UTF-8 and nesting past 1,024 levels included
        raise APIError(400, "invalid_json", "request body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise APIError(422, "invalid_request", "request body must be a JSON object")
    return body, payload


async def _question(request: Request, key: ApiKey) -> tuple[bytes, dict[str, Any]]:
    """A query's or search's body, once the key may use its collection."""
    body, payload = await _json_object(request)
    # rag's default collection; a non-string is left for rag's validation to refuse.
    collection = payload.get("collection", "docs")
    check_collection(key, collection if isinstance(collection, str) else "docs")
    return body, payload


async def _relay(request: Request, call: Coroutine[Any, Any, Reply]) -> Reply:
    """The upstream ``call`` awaited; cancelled if the client leaves first."""
    return await cancel_when(lambda: disconnected(request), call, watch_after_s=_WATCH_AFTER_S)


async def _ask_rag(request: Request, key: ApiKey, method: str, path: str, body: bytes | None = None) -> Reply:
    headers = {KEY_ID_HEADER: key.key_id}
    if body is not None:
        headers["content-type"] = _JSON
    rag: Upstream = request.app.state.rag
    return await _relay(request, rag.send(method, path, body=body, headers=headers))


def _finish(
    response: Response, request: Request, limits: Response, tokens_left: int | None = None
) -> Response:
    """Adds the rate-limit headers, what the answer went without and the key's token quota."""
    response.headers.update(limits.headers)
    degraded: list[str] = request.state.degraded
    key: ApiKey = request.state.api_key
    if degraded:
        response.headers[DEGRADED_HEADER] = ",".join(degraded)
    if tokens_left is not None and key.daily_token_quota is not None:
        response.headers["x-tokenquota-limit"] = str(key.daily_token_quota)
        response.headers["x-tokenquota-remaining"] = str(tokens_left)
    return response


def _visible_collections(reply: Reply, key: ApiKey) -> Reply:
    """A collection list cut down to what the key may use (any other reply as it is)."""
    payload = reply.json()
    if key.collections is None or reply.status != 200 or not isinstance(payload, dict):
        return reply
    items = payload.get("collections")
    if not isinstance(items, list):
        return reply
    payload["collections"] = [c for c in items if isinstance(c, dict) and key.may_use(str(c.get("name")))]
    return replace(reply, content=json.dumps(payload).encode())


def _job_filters(request: Request, key: ApiKey) -> str:
    """The job list's query, its collections held to the key's: a key limited to some collections
    asking for none gets the jobs of all of its own, so pages stay whole (no filtering after)."""
    named = request.query_params.getlist("collection")
    for collection in named:
        check_collection(key, collection)
    if named or key.collections is None:
        return request.url.query
    others = [(k, v) for k, v in request.query_params.multi_items() if k != "collection"]
    # A key with no collections at all asks for one no collection can be named (names start
    # with a letter or _), so the list comes back empty.
    mine = sorted(key.collections) or ["-"]
    return urlencode(others + [("collection", c) for c in mine])


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/query",
        summary="Ask a question (scope: query)",
        description="Forwarded to rag. `stream: true` answers server-sent events, relayed unbuffered. "
        "A query holds `query_token_reservation` tokens of the key's daily quota until its answer "
        "settles them to its `usage.total_tokens` (cached answers: 0); a client that leaves first, or "
        "a stream cut before `done`, is charged the reservation.",
        openapi_extra=scoped("query") | json_body(QUERY_BODY),
        responses={200: {"content": {_JSON: {}, **EVENT_STREAM}}},
    )
    async def query(request: Request, limits: Response, key: ApiKey = Depends(limited("query"))) -> Response:
        body, payload = await _question(request, key)
        if payload.get("variant") is not None and "admin" not in key.scopes:
            raise APIError(403, "variant_pin_forbidden", "only an admin key may pin an answer variant")
        metering: Metering = request.app.state.metering
        reservation = await metering.reserve(key, request.state.degraded)
        try:
            reply = await _ask_rag(request, key, "POST", "/v1/query", body)
        except APIError:
            await reservation.settle(0)  # the gateway's own error answer: no answer reached the client
            raise
        if reply.stream is None:
            await reservation.settle(tokens_in_body(reply.content) if reply.status == 200 else 0)
            return _finish(reply.to_response(), request, limits, reservation.left)
        done = DoneEvents()

        async def settle() -> None:
            if done.tokens is not None:  # cut short: the reservation stands
                await reservation.settle(done.tokens)

        return _finish(
            reply.to_response(on_event=done.feed, on_end=settle), request, limits, reservation.left
        )

    @router.post(
        "/v1/search",
        summary="Search a collection (scope: query)",
        description="Forwarded to rag: ranked chunks, no generation (no tokens counted).",
        openapi_extra=scoped("query") | json_body(SEARCH_BODY),
    )
    async def search(request: Request, limits: Response, key: ApiKey = Depends(limited("query"))) -> Response:
        body, _ = await _question(request, key)
        reply = await _ask_rag(request, key, "POST", "/v1/search", body)
        return _finish(reply.to_response(), request, limits)

    @router.post(
        "/v1/feedback",
        summary="Rate an answer (scope: query)",
        description="`answer_id` from a `/v1/query` answer (or its stream's `done` event), `rating` up "
        "or down, an optional comment and the index of the sentence it concerns. Only the key that "
        "asked may rate an answer; any other gets 404. Rating again replaces the rating.",
        openapi_extra=scoped("query"),
    )
    async def feedback(
        request: Request, limits: Response, key: ApiKey = Depends(limited("query"))
    ) -> Response:
        body, _ = await _json_object(request)
        reply = await _ask_rag(request, key, "POST", "/v1/feedback", body)
        return _finish(reply.to_response(), request, limits)

    @router.get(
        "/v1/variants",
        summary="The answer variants and their traffic shares (scope: admin)",
        description="Forwarded to rag: each variant's `name@version`, weight, share of traffic, and "
        "which is the control.",
        openapi_extra=scoped("admin"),
    )
    async def variants(
        request: Request, limits: Response, key: ApiKey = Depends(limited("admin"))
    ) -> Response:
        reply = await _ask_rag(request, key, "GET", "/v1/variants")
        return _finish(reply.to_response(), request, limits)

    def forward_to_ingest(route_path: str) -> Callable[..., Coroutine[Any, Any, Response]]:
        formatted = path_format(route_path)
        lists_jobs = route_path == "/v1/jobs"  # a listing is narrowed to the key's collections

        async def ingest(
            request: Request, limits: Response, key: ApiKey = Depends(limited("ingest"))
        ) -> Response:
            body = await request.body()
            collection = request.path_params.get("collection")
            if collection is None and request.method == "POST":  # create: the name is in the body
                _, payload = await _json_object(request)
                collection = str(payload.get("name", ""))
            if collection is not None:
                check_collection(key, collection)
            content_type = request.headers.get("content-type")
            upstream: Upstream = request.app.state.ingest
            sent = upstream.send(
                request.method,
                upstream_path(formatted, request.path_params),
                body=body or None,
                params=_job_filters(request, key) if lists_jobs else request.url.query,
                headers={"content-type": content_type} if content_type else None,
            )
            reply = await _relay(request, sent)
            if "job_id" in request.path_params and reply.status == 200:
                job = reply.json()
                check_collection(key, str(job.get("collection")) if isinstance(job, dict) else "")
            return _finish(_visible_collections(reply, key).to_response(), request, limits)

        return ingest

    for method, path, summary in INGEST_ROUTES:
        router.add_api_route(
            path,
            forward_to_ingest(path),
            methods=[method],
            summary=f"{summary} (scope: ingest)",
            description="Forwarded to the ingest API. A key limited to some collections reaches only those.",
            openapi_extra=scoped("ingest"),
            response_model=None,
        )

    @router.get(
        "/v1/status",
        summary="Every service's readiness and live figures (scope: admin or ops)",
        description="Each service's own /health/ready, probed now with a short timeout; `status` is "
        "`ready` only when every service is. `figures` per service, from its own /metrics: "
        "`requests_total`, `requests_per_s` (since this gateway's previous scrape, null on the first), "
        "`latency_p50_s`/`latency_p99_s` (estimated from the histogram buckets), and where the "
        "service has them `cache_hit_rate`, `degraded_answers_total`, `queue_depth`; "
        '`{"error": ...}` when /metrics could not be read.',
        openapi_extra=scoped("admin", "ops"),
    )
    async def suite_status(
        request: Request, limits: Response, key: ApiKey = Depends(limited("admin", "ops"))
    ) -> Response:
        board: StatusBoard = request.app.state.status_board
        response = Response(orjson.dumps(await board.report()), media_type=_JSON)
        return _finish(response, request, limits)

    @router.post(
        "/v1/keys",
        response_model=KeyCreated,
        status_code=201,
        summary="Create a key (scope: admin)",
        description="The secret is in the answer only; the store keeps a salted hash. A key can only "
        "create keys within its own grant: no scope and no collection it lacks (403 grant_exceeded).",
        openapi_extra=scoped("admin"),
    )
    async def create_key(
        body: KeyCreate, request: Request, caller: ApiKey = Depends(require_scope("admin"))
    ) -> KeyCreated:
        collections = None if body.collections is None else set(body.collections)
        if not caller.grants(set(body.scopes), collections):
            raise APIError(
                403, "grant_exceeded", "a key can only create keys within its own scopes and collections"
            )
        store: KeyStore = request.app.state.key_store
        secret, key = await store.create(
            body.name, set(body.scopes), collections, body.rate_limit, body.daily_token_quota
        )
        return KeyCreated(key=secret, **key.public())

    @router.get(
        "/v1/keys",
        response_model=list[KeyInfo],
        summary="List keys (scope: admin)",
        description="Only the keys within the caller's grant: its scopes and collections.",
        openapi_extra=scoped("admin"),
    )
    async def list_keys(request: Request, caller: ApiKey = Depends(require_scope("admin"))) -> list[KeyInfo]:
        store: KeyStore = request.app.state.key_store
        return [KeyInfo(**k.public()) for k in await store.list() if caller.covers(k)]

    @router.delete(
        "/v1/keys/{key_id}",
        status_code=204,
        summary="Revoke a key (scope: admin)",
        description="Takes effect at once on every gateway replica: each request reads its key from Redis. "
        "A key outside the caller's grant is not found, as if it did not exist.",
        openapi_extra=scoped("admin"),
    )
    async def revoke_key(
        key_id: str, request: Request, caller: ApiKey = Depends(require_scope("admin"))
    ) -> Response:
        store: KeyStore = request.app.state.key_store
        stored = await store.lookup(key_id)
        if stored is None or not caller.covers(stored.key) or not await store.revoke(key_id):
            raise APIError(404, "key_not_found", f"no key with id {key_id!r}")
        return Response(status_code=204)

    return router
