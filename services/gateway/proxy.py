"""Forwards requests to an upstream service over one shared httpx2 client, relaying SSE as it comes.

httpx2 is httpx's maintained continuation, with the same API. Its connection pool assigns a
request in one pass over its connections; httpx 0.28's (httpcore 1.0) goes over them once per
idle connection and polls every idle socket, so its cost per request grows with concurrency.

The client keeps HTTP/1.1 connections alive rather than multiplexing HTTP/2: neither library
resets an HTTP/2 stream it abandons, so an upstream would go on working for a client that
left. An HTTP/1.1 response closed early closes its connection, and the upstream's server
tells its handler that the client is gone.

Upstream failures become the gateway's own JSON errors (502/503/504): the client
never sees an upstream stack trace, banner or internal address.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx2
import sse_starlette
from starlette.responses import Response

from services.common.context import request_id_var, traceparent_var
from services.common.errors import APIError
from services.common.logs import get_logger

_log = get_logger(__name__)

# Only these upstream headers reach the client: no internal addresses or server banners.
_PASS_HEADERS = ("content-type", "cache-control", "retry-after")
_ERROR_CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_CONNECT_TIMEOUT_S = 2.0
# One connection per request in flight (HTTP/1.1); past this many, requests wait for one.
_MAX_CONNECTIONS = 1000
# Parsed upstream URLs kept per path; paths hold client input (collection names), so bounded.
URL_CACHE_SIZE = 1024
# A closing stream's cleanup (closing the upstream, counting its tokens) may take this long.
_CLEANUP_S = 5.0
# The gateway's own error for an upstream failure, by the status it answers with.
_FAILURES = {
    502: ("bad_gateway", "failed"),
    503: ("upstream_unavailable", "is unavailable"),
    504: ("upstream_timeout", "did not answer in time"),
}

EventTap = Callable[[httpx2.ServerSentEvent], None]


@dataclass
class Reply:
    """An upstream answer: buffered, or an open event stream (``stream`` set)."""

    status: int
    headers: dict[str, str]
    content: bytes = b""
    stream: httpx2.Response | None = field(default=None, repr=False)

    def json(self) -> object:
        try:
            return json.loads(self.content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    def to_response(
        self, *, on_event: EventTap | None = None, on_end: Callable[[], Awaitable[None]] | None = None
    ) -> Response:
        if self.stream is None:
            return Response(self.content, self.status, self.headers)
        headers = {k: v for k, v in self.headers.items() if k != "content-type"}
        return sse_starlette.EventSourceResponse(
            _relay(self.stream, on_event, on_end), self.status, headers=headers
        )


async def _relay(
    upstream: httpx2.Response, on_event: EventTap | None, on_end: Callable[[], Awaitable[None]] | None
) -> AsyncIterator[sse_starlette.ServerSentEvent]:
    # Unbuffered: each event goes on as soon as its blank line arrives. A client that leaves
    # cancels this generator, and closing the upstream response closes its connection.
    try:
        async for event in httpx2.EventSource(upstream):
            if on_event is not None:
                on_event(event)
            yield sse_starlette.ServerSentEvent(
                data=event.data,
                event=None if event.event == "message" else event.event,  # the default type
                id=event.id or None,
                retry=event.retry,
            )
    except httpx2.HTTPError as exc:
        # Headers are sent: the client sees a cut stream, the log says why.
        _log.warning("upstream_stream_failed", error=type(exc).__name__)
    finally:
        with anyio.move_on_after(_CLEANUP_S, shield=True):
            await upstream.aclose()
            if on_end is not None:
                await on_end()


class Upstream:
    """One upstream service. Its client opens on first use; the app's lifespan closes it."""

    def __init__(self, name: str, base_url: str, *, read_timeout_s: float, deadline_s: float) -> None:
        self.name = name
        self._base_url = base_url
        self._deadline_s = deadline_s
        self.client = httpx2.AsyncClient(
            base_url=base_url,
            timeout=httpx2.Timeout(read_timeout_s, connect=_CONNECT_TIMEOUT_S),
            limits=httpx2.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS
            ),
            trust_env=False,  # never route internal calls through an environment's proxy
        )

    @functools.lru_cache(maxsize=URL_CACHE_SIZE)  # noqa: B019  (one Upstream per service, for the app's life)
    def _url(self, path: str) -> httpx2.URL:
        # An absolute URL, parsed once: the client would parse and join the path on every request.
        return httpx2.URL(self._base_url.rstrip("/") + path)

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: str = "",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        request = self.client.build_request(
            method,
            self._url(path),
            content=body,
            headers={**_context_headers(), **(headers or {})},
            params=params or None,
        )
        try:
            async with asyncio.timeout(self._deadline_s):
                upstream = await self.client.send(request, stream=True)
                out_headers = {k: upstream.headers[k] for k in _PASS_HEADERS if k in upstream.headers}
                if upstream.status_code < 400 and out_headers.get("content-type", "").startswith(
                    "text/event-stream"
                ):
                    return Reply(upstream.status_code, out_headers, stream=upstream)
                try:
                    content = await upstream.aread()
                finally:
                    await upstream.aclose()
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise self._failed(503) from exc
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise self._failed(504) from exc
        except httpx2.HTTPError as exc:
            raise self._failed(502) from exc
        reply = Reply(upstream.status_code, out_headers, content)
        if reply.status >= 500:
            raise self._upstream_error(reply)
        return reply

    def _failed(self, status: int, cause: str = "", headers: dict[str, str] | None = None) -> APIError:
        code, what = _FAILURES[status]
        return APIError(status, code, f"{self.name} {what}{cause}", headers)

    def _upstream_error(self, reply: Reply) -> APIError:
        """The upstream's 5xx in the gateway's words; only its error code is kept."""
        payload = reply.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        cause = f" ({code})" if isinstance(code, str) and _ERROR_CODE_RE.match(code) else ""
        if reply.status == 503 and "retry-after" in reply.headers:
            return self._failed(503, cause, {"retry-after": reply.headers["retry-after"]})
        return self._failed(reply.status if reply.status in _FAILURES else 502, cause)

    async def ready(self) -> None:
        response = await self.client.get("/health/ready", headers=_context_headers())
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} is not ready ({response.status_code})")


def _context_headers() -> dict[str, str]:
    """The request id and trace context, so the upstream's logs join this request's."""
    headers = {}
    if request_id := request_id_var.get():
        headers["x-request-id"] = request_id
    if traceparent := traceparent_var.get():
        headers["traceparent"] = traceparent
    return headers
