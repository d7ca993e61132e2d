"""The express lane: ``/v1/query`` and ``/v1/search`` for keys this replica has admitted before.

Almost every request the gateway serves is one of these two, from a key it has seen. The
gateway is served on Granian's RSGI interface with the lane in front: its requests never
become ASGI messages and never pass FastAPI's routing, dependency solving, middlewares or
slowapi's decorator. Side by side with the lane as an ASGI middleware, that cut the
gateway's own CPU per request by 14-24% (docs/benchmarks.md, "Gateway", sixth session).

The lane skips that machinery, not its rules. The same ``Gatekeeper`` admits the key in its
one Redis trip, limits' moving window decides on the count that trip made, slowapi writes
the ``X-RateLimit-*`` headers, and ``rag_relay`` does what the routes do. It does itself
what the app's middlewares do for the routes: the request id and trace context, the request
metrics, the access line, the body cap and the CORS headers. Everything else, and any key
this replica has not admitted yet, goes on to the FastAPI app through ``RSGIBridge``.

While the key's last answer here left room in its window, the request goes to rag while the
key is admitted (``_serve_ahead``), so the Redis trip adds no time of its own. A refusal
cancels rag's call before anything of it is returned; a key refused once is admitted first
again until an answer shows room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope as RSGIScope
from limits import RateLimitItem
from prometheus_client import Counter
from redis.exceptions import RedisError
from slowapi import Limiter
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message

from services.common.disconnect import CLIENT_CLOSED_REQUEST, ClientDisconnected, cancel_when
from services.common.errors import APIError, unhandled_response
from services.common.metrics import HTTP_IN_FLIGHT, record_request
from services.common.request_context import enter_request, log_access
from services.common.rsgi_bridge import RSGIBridge
from services.gateway.auth import DEGRADED_WITHOUT_REDIS, Gatekeeper, Pass, bearer_token, check_collection
from services.gateway.body_limit import payload_too_large
from services.gateway.keys import ApiKey
from services.gateway.proxy import Reply, Upstream
from services.gateway.quota import Metering
from services.gateway.rag_relay import (
    Incoming,
    finish,
    parse_json_object,
    query_response,
    relay_query,
    relay_search,
)
from services.gateway.ratelimit import too_many_requests, with_limit_headers
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable, store_down_response
from services.gateway.window_storage import limit_item

EXPRESS_REQUESTS = Counter(
    "quarry_gateway_express_requests_total",
    "Requests served by the express lane (the rest went through the FastAPI routes), by route and"
    " whether rag was asked while the key was being admitted (ahead) or after.",
    ["route", "ahead"],
)
ABANDONED_AHEAD = Counter(
    "quarry_gateway_abandoned_ahead_total",
    "Requests sent to rag ahead of their admission that were then refused, their rag call cancelled.",
)
_SCOPE = "query"
_SERVICE = "gateway"
_ROUTES = frozenset(("/v1/query", "/v1/search"))
# A client that leaves is noticed this much later at most; a cached answer never needs a watch.
_WATCH_AFTER_S = 0.005


@dataclass(frozen=True)
class _Request:
    """What the lane needs of one request."""

    route: str  # also the metrics label, as a FastAPI route's template would be
    presented: str  # the bearer token
    known: ApiKey  # the key as this replica last admitted it
    declared_length: int | None


class ExpressLane:
    """The gateway's RSGI application: the lane for known keys' queries and searches, the
    FastAPI app for everything else."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gatekeeper: Gatekeeper,
        limiter: Limiter,
        identifiers: Callable[[str], list[str]],
        breaker: StoreBreaker,
        metering: Metering,
        rag: Upstream,
        max_body_bytes: int,
        cors: CORSMiddleware | None,
    ) -> None:
        self._app = RSGIBridge(app)
        self._gatekeeper = gatekeeper
        self._limiter = limiter
        self._identifiers = identifiers  # key_id -> what slowapi names the key's window by
        self._breaker = breaker
        self._metering = metering
        self._rag = rag
        self._max_body_bytes = max_body_bytes
        self._cors = cors  # the app's own CORS rules, for the headers of the lane's answers
        self._in_flight = HTTP_IN_FLIGHT.labels(_SERVICE)
        # key_id -> places its window had left at this replica's last answer (see _serve_ahead).
        self._headroom: dict[str, int] = {}

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._app.__rsgi_init__(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._app.__rsgi_del__(loop)

    async def __rsgi__(self, scope: RSGIScope, protocol: HTTPProtocol) -> None:
        request = self._lane_request(scope)
        if request is None:
            await self._app.__rsgi__(scope, protocol)
            return
        started = time.perf_counter()
        headers = scope.headers
        request_id, traceparent = enter_request(headers.get("x-request-id"), headers.get("traceparent"))
        self._in_flight.inc()
        status = 500
        try:
            response = await self._answer(request, protocol)
            extra = [(b"x-request-id", request_id.encode()), (b"traceparent", traceparent.encode())]
            out = await _answer_headers(response, extra, self._cors, headers.get("origin"))
            status = await _send(protocol, response, out)
        finally:
            self._in_flight.dec()
            record_request(_SERVICE, "POST", request.route, status, started)
            log_access("POST", request.route, status, started, traceparent)

    def _lane_request(self, scope: RSGIScope) -> _Request | None:
        """The request, if the lane takes it: a POST to its routes from a key admitted here before,
        with a body that does not declare itself over the cap (the app refuses that one)."""
        if scope.proto != "http" or scope.method != "POST" or scope.path not in _ROUTES:
            return None
        headers = scope.headers
        presented = bearer_token(headers.get("authorization", ""))
        known = self._gatekeeper.recognised(presented, _SCOPE) if presented is not None else None
        if presented is None or known is None:
            return None
        declared = headers.get("content-length")
        if declared is None:
            return _Request(scope.path, presented, known, None)
        if not declared.isdigit() or int(declared) > self._max_body_bytes:
            return None
        return _Request(scope.path, presented, known, int(declared))

    async def _answer(self, request: _Request, protocol: HTTPProtocol) -> Response:
        ahead = self._predicts_admission(request.known)
        EXPRESS_REQUESTS.labels(request.route, "true" if ahead else "false").inc()
        try:
            body = await self._read_body(request, protocol)
            incoming = Incoming(
                body, parse_json_object(body), protocol.client_disconnect, watch_after_s=_WATCH_AFTER_S
            )
            if ahead:
                return await self._serve_ahead(request, incoming)
            return await self._serve(request, incoming)
        except Exception as exc:
            return self._refusal(request.known.key_id, exc)

    async def _read_body(self, request: _Request, protocol: HTTPProtocol) -> bytes:
        try:
            if request.declared_length is not None:  # within the cap: one call reads it all
                body = await protocol()
                if len(body) < request.declared_length:  # the client left mid-body
                    raise ClientDisconnected
                return body
            received = bytearray()
            async for chunk in protocol:
                received += chunk
                if len(received) > self._max_body_bytes:
                    raise payload_too_large(self._max_body_bytes)
            return bytes(received)
        except (ProtocolClosed, ProtocolError) as exc:
            raise ClientDisconnected from exc

    async def _serve(self, request: _Request, incoming: Incoming) -> Response:
        """Admits the key, then relays: the order the FastAPI routes keep."""
        passed = await self._gatekeeper.authenticate(request.presented, _SCOPE)
        degraded = list(DEGRADED_WITHOUT_REDIS) if passed.without_redis else []
        view = self._count(passed)
        if request.route == "/v1/query":
            response = await relay_query(
                incoming,
                passed.key,
                degraded=degraded,
                tokens_used=passed.tokens_used,
                metering=self._metering,
                rag=self._rag,
            )
        else:
            response = await relay_search(incoming, passed.key, degraded=degraded, rag=self._rag)
        return self._admitted(request.known.key_id, response, view)

    async def _serve_ahead(self, request: _Request, incoming: Incoming) -> Response:
        """Sends the request to rag while its key is admitted, and waits for both.

        The Redis trip then costs no time of its own. rag never answers a refused request:
        the upstream call is cancelled (its stream reset) before anything of it is returned.
        Taken only while this replica last saw the key with room in its window.
        """
        collection = incoming.collection
        sent = self._rag.send("POST", request.route, body=incoming.body, content_type="application/json")
        # A collection the key may not use is refused after counting, as on the other way.
        ahead = asyncio.ensure_future(sent) if request.known.may_use(collection) else None
        try:
            passed = await self._gatekeeper.authenticate(request.presented, _SCOPE)
            degraded = list(DEGRADED_WITHOUT_REDIS) if passed.without_redis else []
            view = self._count(passed)
            check_collection(passed.key, collection)  # the record may have changed since
            tokens_left = None
            if request.route == "/v1/query":
                tokens_left = await self._metering.remaining(passed.key, degraded, passed.tokens_used)
        except BaseException:
            if ahead is None:
                sent.close()  # never started
            else:
                _abandon(ahead)
            raise
        if ahead is None:  # allowed now, though not by the record the request was sent on
            ahead = asyncio.ensure_future(sent)
        reply = await cancel_when(incoming.gone, ahead, watch_after_s=incoming.watch_after_s)
        if request.route == "/v1/query":
            response = await query_response(reply, passed.key, degraded, tokens_left, self._metering)
        else:
            response = finish(reply.to_response(), passed.key, degraded)
        return self._admitted(request.known.key_id, response, view)

    def _predicts_admission(self, known: ApiKey) -> bool:
        # Each request sent ahead spends one of the places the last answer said were left, so
        # a burst cannot send more ahead than the window had room for; a refusal ends it.
        if not self._breaker.available or self._headroom.get(known.key_id, 0) <= 0:
            return False
        self._headroom[known.key_id] -= 1
        return True

    def _admitted(
        self, key_id: str, response: Response, view: tuple[RateLimitItem, list[str]] | None
    ) -> Response:
        response = with_limit_headers(self._limiter, response, view)
        # No window (Redis skipped, fail-open): nothing to predict from.
        remaining = response.headers.get("x-ratelimit-remaining", "") if view is not None else ""
        self._headroom[key_id] = int(remaining) if remaining.isdigit() else 0
        return response

    def _refusal(self, key_id: str, exc: Exception) -> Response:
        """The answer the app's exception handlers would give ``exc``."""
        self._headroom.pop(key_id, None)
        if isinstance(exc, _Refused):
            return exc.response
        if isinstance(exc, APIError):
            return exc.response()
        if isinstance(exc, (RedisError, StoreUnavailable)):
            return store_down_response(self._breaker, exc)
        if isinstance(exc, ClientDisconnected):
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return unhandled_response(exc)

    def _count(self, passed: Pass) -> tuple[RateLimitItem, list[str]] | None:
        """Counts the request in the key's window (slowapi's shared one); 429 past the limit."""
        if passed.without_redis:  # fail-open: no window to count in, as for slowapi
            return None
        item = limit_item(passed.key.rate_limit)
        identifiers = self._identifiers(passed.key.key_id)
        # The admission script counted it already (read_ahead): no Redis call here.
        if not self._limiter.limiter.hit(item, *identifiers):
            raise _Refused(too_many_requests(self._limiter, str(item), (item, identifiers)))
        return item, identifiers


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _abandon(ahead: asyncio.Future[Reply]) -> None:
    """Cancels a call sent ahead for a refused request; an error it already had is dropped."""
    ABANDONED_AHEAD.inc()
    if ahead.done():
        if not ahead.cancelled():
            ahead.exception()
    else:
        ahead.cancel()


async def _noop(_: Message) -> None:
    pass


async def _answer_headers(
    response: Response, extra: list[tuple[bytes, bytes]], cors: CORSMiddleware | None, origin: str | None
) -> list[tuple[str, str]]:
    """The answer's headers for RSGI; with CORS set, as the app's CORSMiddleware writes them."""
    raw = [*response.raw_headers, *extra]
    if cors is not None:
        start: Message = {"type": "http.response.start", "status": response.status_code, "headers": raw}
        given = Headers(headers={"origin": origin}) if origin is not None else Headers()
        await cors.send(start, send=_noop, request_headers=given)  # edits start's headers
        raw = start["headers"]
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


async def _send(protocol: HTTPProtocol, response: Response, headers: list[tuple[str, str]]) -> int:
    """Answers with ``response`` and ``headers``; returns the status to log and count."""
    status = response.status_code
    if not isinstance(response, StreamingResponse):
        protocol.response_bytes(status, headers, bytes(response.body))
        return status
    # Unbuffered: each chunk goes out as rag sends it. A client that leaves ends the relay,
    # whose closing resets rag's stream.
    transport = protocol.response_stream(status, headers)
    chunks = response.body_iterator

    async def pump() -> None:
        async for chunk in chunks:
            await transport.send_bytes(chunk.encode() if isinstance(chunk, str) else bytes(chunk))

    try:
        await cancel_when(protocol.client_disconnect, pump())
    except (ClientDisconnected, ProtocolClosed):
        pass  # the head went out: logged with its status, as the app's streams are
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    return status
