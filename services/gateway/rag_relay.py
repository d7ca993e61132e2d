"""What ``/v1/query`` and ``/v1/search`` do once their key is admitted: check the body's
collection and the token quota, relay to rag, and count what the answer spent.

Shared by the FastAPI routes (``routes.py``) and the express lane (``express_lane.py``),
so both ways in answer alike.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.common.disconnect import cancel_when, disconnected
from services.common.errors import APIError
from services.gateway.auth import check_collection
from services.gateway.keys import ApiKey
from services.gateway.proxy import Reply, Upstream
from services.gateway.quota import Metering
from services.gateway.usage import DoneEventTap, tokens_in_body

DEGRADED_HEADER = "x-quarry-degraded"
_JSON = "application/json"


@dataclass(frozen=True)
class Incoming:
    """A ``/v1/query`` or ``/v1/search`` request as the relay needs it, from either way in."""

    body: bytes
    payload: dict[str, Any]
    gone: Callable[[], Coroutine[Any, Any, None]]  # a watch that ends when the client has left
    # The watch starts once rag has taken this long (see cancel_when); 0: at once.
    watch_after_s: float = 0.0

    @property
    def collection(self) -> str:
        return collection_of(self.payload)


async def incoming(request: Request) -> Incoming:
    """What a FastAPI route received, for the relay."""
    body, payload = await json_object(request)
    return Incoming(body, payload, lambda: disconnected(request))


async def json_object(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The request body, raw and parsed; 400/422 unless it is one JSON object."""
    body = await request.body()
    return body, parse_json_object(body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` parsed; 400/422 unless it is one JSON object (orjson: a fifth of json's time)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # bad UTF-8 and nesting past 1,024 levels included
        raise APIError(400, "invalid_json", "request body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise APIError(422, "invalid_request", "request body must be a JSON object")
    return payload


def collection_of(payload: dict[str, Any]) -> str:
    # rag's default collection; a non-string is left for the upstream's validation to refuse.
    value = payload.get("collection", "docs")
    return value if isinstance(value, str) else "docs"


def finish(response: Response, key: ApiKey, degraded: list[str], tokens_left: int | None = None) -> Response:
    """Adds what the answer went without and the key's token quota to its headers."""
    if degraded:
        response.headers[DEGRADED_HEADER] = ",".join(degraded)
    if tokens_left is not None and key.daily_token_quota is not None:
        response.headers["x-tokenquota-limit"] = str(key.daily_token_quota)
        response.headers["x-tokenquota-remaining"] = str(tokens_left)
    return response


async def relay_query(
    request: Incoming,
    key: ApiKey,
    *,
    degraded: list[str],
    tokens_used: int | None,
    metering: Metering,
    rag: Upstream,
) -> Response:
    check_collection(key, request.collection)
    tokens_left = await metering.remaining(key, degraded, tokens_used)
    sent = rag.send("POST", "/v1/query", body=request.body, content_type=_JSON)
    reply = await cancel_when(request.gone, sent, watch_after_s=request.watch_after_s)
    return await query_response(reply, key, degraded, tokens_left, metering)


async def query_response(
    reply: Reply, key: ApiKey, degraded: list[str], tokens_left: int | None, metering: Metering
) -> Response:
    """rag's answer to ``/v1/query`` for the client; the tokens it spent count against the key."""
    if reply.stream is None:
        if reply.status == 200:
            await metering.record(key, tokens_in_body(reply.content))
        return finish(reply.to_response(), key, degraded, tokens_left)
    tap = DoneEventTap()

    async def record() -> None:
        await metering.record(key, tap.tokens)

    return finish(reply.to_response(on_chunk=tap.feed, on_end=record), key, degraded, tokens_left)


async def relay_search(request: Incoming, key: ApiKey, *, degraded: list[str], rag: Upstream) -> Response:
    check_collection(key, request.collection)
    sent = rag.send("POST", "/v1/search", body=request.body, content_type=_JSON)
    reply = await cancel_when(request.gone, sent, watch_after_s=request.watch_after_s)
    return finish(reply.to_response(), key, degraded)
