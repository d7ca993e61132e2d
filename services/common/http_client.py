"""Pooled HTTP/2 (h2c, prior knowledge) clients for service-to-service calls."""

from __future__ import annotations

import httpx

from services.common.context import request_id_var, traceparent_var

_SEMAPHORE_OVERFLOW = "semaphore released too many times"


class _GoawayRetryTransport(httpx.AsyncBaseTransport):
    """Retries a request once when the server closed the connection under it.

    An HTTP/2 server may send GOAWAY (Hypercorn does after N streams, any server
    does on shutdown); requests caught in flight fail with RemoteProtocolError
    without having been processed, so sending them again on a new connection is safe.
    Callers map ``httpx.HTTPError`` to their dependency being unavailable.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            try:
                return await self._inner.handle_async_request(request)
            except httpx.RemoteProtocolError:
                return await self._inner.handle_async_request(request)
        except ValueError as exc:
            # httpcore 1.0.9's HTTP/2 cleanup can release its stream semaphore once too often
            # when a stream fails (its stream bookkeeping, encode/httpcore#1022), and that error
            # hides the stream's own failure. Seen once in CI on rag -> llm. It is a failed
            # exchange, possibly processed, so it is reported as one and not sent again.
            if _SEMAPHORE_OVERFLOW not in str(exc):
                raise
            raise httpx.TransportError("HTTP/2 stream failed", request=request) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _propagate_context(request: httpx.Request) -> None:
    request_id = request_id_var.get()
    if request_id and "x-request-id" not in request.headers:
        request.headers["x-request-id"] = request_id
    traceparent = traceparent_var.get()
    if traceparent and "traceparent" not in request.headers:
        request.headers["traceparent"] = traceparent


def create_http2_client(
    base_url: str,
    *,
    timeout_s: float = 30.0,
    connect_timeout_s: float = 2.0,
    max_connections: int = 16,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that speaks only HTTP/2 cleartext and carries the request id."""
    transport = httpx.AsyncHTTPTransport(
        http1=False,
        http2=True,
        retries=1,  # connect retries only
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    return httpx.AsyncClient(
        base_url=base_url,
        http1=False,
        http2=True,
        transport=_GoawayRetryTransport(transport),
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        headers=headers,
        event_hooks={"request": [_propagate_context]},
    )
