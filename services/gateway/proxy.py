"""Forwards requests to an upstream service over pooled HTTP/2, streaming SSE through.

Upstream failures become the gateway's own JSON errors (502/503/504): the client
never sees an upstream stack trace, banner or internal address.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import anyio
from starlette.responses import Response, StreamingResponse

from services.common.context import request_id_var, traceparent_var
from services.common.errors import APIError
from services.common.logs import get_logger
from services.gateway import h2_channel

_log = get_logger(__name__)

# Only these upstream headers reach the client: no internal addresses or server banners.
_PASS_HEADERS = ("content-type", "cache-control", "retry-after", "x-accel-buffering")
_ERROR_CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass
class Reply:
    """An upstream answer: buffered, or an open event stream (``stream`` set)."""

    status: int
    headers: dict[str, str]
    content: bytes = b""
    stream: h2_channel.Response | None = field(default=None, repr=False)
    read_timeout_s: float | None = None

    def json(self) -> object:
        try:
            return json.loads(self.content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    def to_response(
        self,
        *,
        content: bytes | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        if self.stream is None:
            return Response(self.content if content is None else content, self.status, self.headers)
        relay = _relay(self.stream, self.read_timeout_s, on_chunk, on_end)
        return StreamingResponse(relay, self.status, self.headers)


async def _relay(
    upstream: h2_channel.Response,
    read_timeout_s: float | None,
    on_chunk: Callable[[bytes], None] | None,
    on_end: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    # Unbuffered: each chunk reaches the client as the upstream sends it. A client that
    # leaves cancels this generator, and closing the upstream response resets its stream.
    completed = False
    try:
        async for chunk in upstream.iter_chunks(read_timeout_s):
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk
        completed = True
    except (TimeoutError, h2_channel.ChannelError) as exc:
        # Headers are sent: the client sees a cut stream, the log says why.
        _log.warning("upstream_stream_failed", error=type(exc).__name__)
    finally:
        upstream.close()
        if completed and on_end is not None:
            with anyio.CancelScope(shield=True):
                await on_end()


class Upstream:
    def __init__(self, name: str, base_url: str, *, read_timeout_s: float, deadline_s: float) -> None:
        self.name = name
        self.channel = h2_channel.Channel(base_url)
        self._read_timeout_s = read_timeout_s
        self._deadline_s = deadline_s

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, str] | str | None = None,
    ) -> Reply:
        headers = _context_headers()
        if content_type:
            headers.append(("content-type", content_type))
        query = params if isinstance(params, str) else urlencode(params or {})
        target = f"{path}?{query}" if query else path
        try:
            async with asyncio.timeout(self._deadline_s):
                upstream = await self.channel.request(method, target, headers=headers, body=body)
                out_headers = {k: upstream.headers[k] for k in _PASS_HEADERS if k in upstream.headers}
                if upstream.status < 400 and out_headers.get("content-type", "").startswith(
                    "text/event-stream"
                ):
                    return Reply(
                        upstream.status, out_headers, stream=upstream, read_timeout_s=self._read_timeout_s
                    )
                try:
                    content = await upstream.read(self._read_timeout_s)
                finally:
                    upstream.close()
        except TimeoutError as exc:
            raise APIError(504, "upstream_timeout", f"{self.name} did not answer in time") from exc
        except h2_channel.ConnectFailed as exc:
            raise APIError(503, "upstream_unavailable", f"{self.name} is unavailable") from exc
        except h2_channel.ChannelError as exc:
            raise APIError(502, "bad_gateway", f"{self.name} failed") from exc
        reply = Reply(upstream.status, out_headers, content)
        if reply.status >= 500:
            raise self._upstream_error(reply)
        return reply

    def _upstream_error(self, reply: Reply) -> APIError:
        """The upstream's 5xx in the gateway's words; only its error code is kept."""
        payload = reply.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        cause = f" ({code})" if isinstance(code, str) and _ERROR_CODE_RE.match(code) else ""
        retry = {"retry-after": reply.headers["retry-after"]} if "retry-after" in reply.headers else {}
        if reply.status == 503:
            return APIError(503, "upstream_unavailable", f"{self.name} is unavailable{cause}", retry)
        if reply.status == 504:
            return APIError(504, "upstream_timeout", f"{self.name} did not answer in time{cause}")
        return APIError(502, "bad_gateway", f"{self.name} failed{cause}")

    async def ready(self) -> None:
        async with asyncio.timeout(self._read_timeout_s):
            upstream = await self.channel.request("GET", "/health/ready", headers=_context_headers())
            try:
                await upstream.read()
            finally:
                upstream.close()
        if upstream.status != 200:
            raise RuntimeError(f"{self.name} is not ready ({upstream.status})")

    async def aclose(self) -> None:
        await self.channel.aclose()


def _context_headers() -> list[tuple[str, str]]:
    """The request id and trace context, so the upstream's logs join this request's."""
    headers = []
    if request_id := request_id_var.get():
        headers.append(("x-request-id", request_id))
    if traceparent := traceparent_var.get():
        headers.append(("traceparent", traceparent))
    return headers
