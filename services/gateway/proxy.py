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

import anyio
import httpx
from starlette.responses import Response, StreamingResponse

from services.common.errors import APIError
from services.common.http_client import create_http2_client
from services.common.logs import get_logger

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
    stream: httpx.Response | None = field(default=None, repr=False)

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
        return StreamingResponse(_relay(self.stream, on_chunk, on_end), self.status, self.headers)


async def _relay(
    upstream: httpx.Response,
    on_chunk: Callable[[bytes], None] | None,
    on_end: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    # Unbuffered: each chunk reaches the client as the upstream sends it. A client that
    # leaves cancels this generator, and closing the upstream response resets its stream.
    completed = False
    try:
        async for chunk in upstream.aiter_raw():
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk
        completed = True
    except httpx.HTTPError as exc:
        # Headers are sent: the client sees a cut stream, the log says why.
        _log.warning("upstream_stream_failed", error=type(exc).__name__)
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
            if completed and on_end is not None:
                await on_end()


class Upstream:
    def __init__(self, name: str, base_url: str, *, read_timeout_s: float, deadline_s: float) -> None:
        self.name = name
        self.client = create_http2_client(base_url, timeout_s=read_timeout_s, max_connections=32)
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
        headers = {"content-type": content_type} if content_type else {}
        request = self.client.build_request(method, path, content=body, headers=headers, params=params)
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
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise APIError(504, "upstream_timeout", f"{self.name} did not answer in time") from exc
        except httpx.ConnectError as exc:
            raise APIError(503, "upstream_unavailable", f"{self.name} is unavailable") from exc
        except httpx.HTTPError as exc:
            raise APIError(502, "bad_gateway", f"{self.name} failed") from exc
        reply = Reply(upstream.status_code, out_headers, content)
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
        (await self.client.get("/health/ready")).raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()
