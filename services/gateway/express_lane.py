"""The express lane: ``/v1/query`` and ``/v1/search`` for keys this replica has admitted before.

Almost every request the gateway serves is one of these two, from a key it has seen.
Through FastAPI such a request paid for routing, dependency solving and slowapi's
decorator, which inspects the endpoint's signature and parses the limit string on every
call: about half of the gateway's CPU per request (docs/benchmarks.md, "Gateway").

The lane skips that machinery, not its rules. The same ``Gatekeeper`` admits the key in its
one Redis trip, limits' moving window decides on the count that trip made, slowapi writes
the ``X-RateLimit-*`` headers, and ``rag_relay`` does what the routes do. The middlewares
around it (request id, metrics, body limit) are the app's own. Everything else, and any key
this replica has not admitted yet, goes on to the FastAPI app.

While the key's last answer here left room in its window, the request goes to rag while the
key is admitted (``_serve_ahead``), so the Redis trip adds no time of its own. A refusal
cancels rag's call before anything of it is returned; a key refused once is admitted first
again until an answer shows room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem
from prometheus_client import Counter
from redis.exceptions import RedisError
from slowapi import Limiter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.disconnect import CLIENT_CLOSED_REQUEST, ClientDisconnected, cancel_on_disconnect
from services.common.errors import APIError
from services.gateway.auth import DEGRADED_WITHOUT_REDIS, Gatekeeper, Pass, bearer_token, check_collection
from services.gateway.keys import ApiKey
from services.gateway.proxy import Reply, Upstream
from services.gateway.quota import Metering
from services.gateway.rag_relay import (
    collection_of,
    finish,
    json_object,
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


@dataclass(frozen=True)
class _Route:
    path: str  # what MetricsMiddleware labels the request by, as for a FastAPI route


_ROUTES = {path: _Route(path) for path in ("/v1/query", "/v1/search")}


class ExpressLane:
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
    ) -> None:
        self.app = app
        self._gatekeeper = gatekeeper
        self._limiter = limiter
        self._identifiers = identifiers  # key_id -> what slowapi names the key's window by
        self._breaker = breaker
        self._metering = metering
        self._rag = rag
        # key_id -> places its window had left at this replica's last answer (see _serve_ahead).
        self._headroom: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        presented = _presented_key(scope) if route is not None else None
        known = self._gatekeeper.recognised(presented, _SCOPE) if presented is not None else None
        if route is None or presented is None or known is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        if self._predicts_admission(known):
            EXPRESS_REQUESTS.labels(route.path, "true").inc()
            response = await self._serve_ahead(route, request, presented, known)
        else:
            EXPRESS_REQUESTS.labels(route.path, "false").inc()
            response = await self._serve(route, request, presented, known)
        await response(scope, receive, send)

    async def _serve(self, route: _Route, request: Request, presented: str, known: ApiKey) -> Response:
        """Admits the key, then relays: the order the FastAPI routes keep."""
        view = None
        try:
            passed = await self._gatekeeper.authenticate(presented, _SCOPE)
            degraded = list(DEGRADED_WITHOUT_REDIS) if passed.without_redis else []
            view = self._count(passed)
            if route.path == "/v1/query":
                response = await relay_query(
                    request,
                    passed.key,
                    degraded=degraded,
                    tokens_used=passed.tokens_used,
                    metering=self._metering,
                    rag=self._rag,
                )
            else:
                response = await relay_search(request, passed.key, degraded=degraded, rag=self._rag)
        except Exception as exc:
            return self._refusal(known.key_id, exc)
        return self._admitted(known.key_id, response, view)

    async def _serve_ahead(self, route: _Route, request: Request, presented: str, known: ApiKey) -> Response:
        """Sends the request to rag while its key is admitted, and waits for both.

        The Redis trip then costs no time of its own. rag never answers a refused request:
        the upstream call is cancelled (its stream reset) before anything of it is returned.
        Taken only while this replica last saw the key with room in its window.
        """
        view = None
        try:
            body, payload = await json_object(request)
            collection = collection_of(payload)
            sent = self._rag.send("POST", route.path, body=body, content_type="application/json")
            # A collection the key may not use is refused after counting, as on the other way.
            ahead = asyncio.ensure_future(sent) if known.may_use(collection) else None
            try:
                passed = await self._gatekeeper.authenticate(presented, _SCOPE)
                degraded = list(DEGRADED_WITHOUT_REDIS) if passed.without_redis else []
                view = self._count(passed)
                check_collection(passed.key, collection)  # the record may have changed since
                tokens_left = None
                if route.path == "/v1/query":
                    tokens_left = await self._metering.remaining(passed.key, degraded, passed.tokens_used)
            except BaseException:
                if ahead is None:
                    sent.close()  # never started
                else:
                    _abandon(ahead)
                raise
            if ahead is None:  # allowed now, though not by the record the request was sent on
                ahead = asyncio.ensure_future(sent)
            reply = await cancel_on_disconnect(request, ahead)
            if route.path == "/v1/query":
                response = await query_response(reply, passed.key, degraded, tokens_left, self._metering)
            else:
                response = finish(reply.to_response(), passed.key, degraded)
        except Exception as exc:
            return self._refusal(known.key_id, exc)
        return self._admitted(known.key_id, response, view)

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
        self._headroom.pop(key_id, None)
        if isinstance(exc, _Refused):
            return exc.response
        # The app's exception handlers sit below this middleware: answer as they would.
        if isinstance(exc, APIError):
            return exc.response()
        if isinstance(exc, (RedisError, StoreUnavailable)):
            return store_down_response(self._breaker, exc)
        if isinstance(exc, (ClientDisconnected, ClientDisconnect)):  # gone, or gone mid-body
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        raise exc

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


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def _abandon(ahead: asyncio.Future[Reply]) -> None:
    """Cancels a call sent ahead for a refused request; an error it already had is dropped."""
    ABANDONED_AHEAD.inc()
    if ahead.done():
        if not ahead.cancelled():
            ahead.exception()
    else:
        ahead.cancel()
