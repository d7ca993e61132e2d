"""Public routes of the gateway: query and search to rag, collections and jobs to ingest, keys."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request, Response
from slowapi import Limiter

from services.common.disconnect import cancel_on_disconnect
from services.common.errors import APIError
from services.gateway.auth import check_collection, require_scope
from services.gateway.keys import ApiKey, KeyStore
from services.gateway.openapi import scoped
from services.gateway.proxy import Reply, Upstream
from services.gateway.rag_relay import finish, incoming, json_object, relay_query, relay_search
from services.gateway.ratelimit import SHARED_SCOPE, per_key_limit
from services.gateway.schemas import KeyCreate, KeyCreated, KeyInfo

# (method, path, summary) of every ingest API route the gateway exposes (scope: ingest).
INGEST_ROUTES = (
    ("POST", "/v1/collections", "Create a collection"),
    ("GET", "/v1/collections", "List the collections this key may use"),
    ("GET", "/v1/collections/{collection}", "Describe a collection"),
    ("DELETE", "/v1/collections/{collection}", "Drop a collection"),
    ("POST", "/v1/collections/{collection}/documents", "Add documents (multipart files or JSON records)"),
    ("GET", "/v1/collections/{collection}/documents", "List a collection's documents"),
    ("DELETE", "/v1/collections/{collection}/documents/{doc_id:path}", "Delete a document"),
    ("GET", "/v1/jobs/{job_id}", "Follow an ingest job"),
)


def _visible_collections(reply: Reply, key: ApiKey) -> bytes | None:
    """A collection list cut down to what the key may use (None: leave the body as is)."""
    payload = reply.json()
    if key.collections is None or reply.status != 200 or not isinstance(payload, dict):
        return None
    items = payload.get("collections")
    if not isinstance(items, list):
        return None
    payload["collections"] = [c for c in items if isinstance(c, dict) and key.may_use(str(c.get("name")))]
    return json.dumps(payload).encode()


def build_router(limiter: Limiter) -> APIRouter:
    router = APIRouter()
    limit = limiter.shared_limit(per_key_limit, scope=SHARED_SCOPE)

    @router.post(
        "/v1/query",
        summary="Ask a question (scope: query)",
        description="Forwarded to rag. `stream: true` answers server-sent events, relayed unbuffered. "
        "Uncached answers count their `usage.total_tokens` against the key's daily token quota.",
        openapi_extra=scoped("query"),
    )
    @limit
    async def query(request: Request, key: ApiKey = Depends(require_scope("query"))) -> Response:
        return await relay_query(
            await incoming(request),
            key,
            degraded=request.state.degraded,
            tokens_used=request.state.tokens_used,
            metering=request.app.state.metering,
            rag=request.app.state.rag,
        )

    @router.post(
        "/v1/search",
        summary="Search a collection (scope: query)",
        description="Forwarded to rag: ranked chunks, no generation (no tokens counted).",
        openapi_extra=scoped("query"),
    )
    @limit
    async def search(request: Request, key: ApiKey = Depends(require_scope("query"))) -> Response:
        return await relay_search(
            await incoming(request), key, degraded=request.state.degraded, rag=request.app.state.rag
        )

    @limit
    async def ingest(request: Request, key: ApiKey = Depends(require_scope("ingest"))) -> Response:
        body = await request.body()
        collection = request.path_params.get("collection")
        if collection is None and request.method == "POST":  # create: the name is in the body
            _, payload = await json_object(request)
            collection = str(payload.get("name", ""))
        if collection is not None:
            check_collection(key, collection)
        upstream: Upstream = request.app.state.ingest
        reply = await cancel_on_disconnect(
            request,
            upstream.send(
                request.method,
                request.url.path,
                body=body or None,
                content_type=request.headers.get("content-type"),
                params=request.url.query,
            ),
        )
        if "job_id" in request.path_params and reply.status == 200:
            job = reply.json()
            check_collection(key, str(job.get("collection")) if isinstance(job, dict) else "")
        response = reply.to_response(content=_visible_collections(reply, key))
        return finish(response, key, request.state.degraded)

    for method, path, summary in INGEST_ROUTES:
        router.add_api_route(
            path,
            ingest,
            methods=[method],
            summary=f"{summary} (scope: ingest)",
            description="Forwarded to the ingest API. A key limited to some collections reaches only those.",
            openapi_extra=scoped("ingest"),
            response_model=None,
        )

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
            body.name,
            set(body.scopes),
            None if body.collections is None else set(body.collections),
            body.rate_limit,
            body.daily_token_quota,
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
