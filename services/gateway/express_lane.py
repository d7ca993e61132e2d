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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem
from prometheus_client import Counter
from redis.exceptions import RedisError
from slowapi import Limiter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.disconnect import CLIENT_CLOSED_REQUEST, ClientDisconnected
from services.common.errors import APIError
from services.gateway.auth import DEGRADED_WITHOUT_REDIS, Gatekeeper, Pass, bearer_token
from services.gateway.proxy import Upstream
from services.gateway.quota import Metering
from services.gateway.rag_relay import relay_query, relay_search
from services.gateway.ratelimit import too_many_requests, with_limit_headers
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable, store_down_response
from services.gateway.window_storage import limit_item

EXPRESS_REQUESTS = Counter(
    "quarry_gateway_express_requests_total",
    "Requests served by the express lane (the rest went through the FastAPI routes), by route.",
    ["route"],
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        presented = _presented_key(scope) if route is not None else None
        if route is None or presented is None or not self._gatekeeper.recognises(presented, _SCOPE):
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        EXPRESS_REQUESTS.labels(route.path).inc()
        response = await self._serve(route, Request(scope, receive), presented)
        await response(scope, receive, send)

    async def _serve(self, route: _Route, request: Request, presented: str) -> Response:
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
        except _Refused as refused:
            return refused.response
        # The app's exception handlers sit below this middleware: answer as they would.
        except APIError as exc:
            return exc.response()
        except (RedisError, StoreUnavailable) as exc:
            return store_down_response(self._breaker, exc)
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return with_limit_headers(self._limiter, response, view)

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
