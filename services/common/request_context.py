"""ASGI middleware that gives each request an id and a W3C trace context."""

from __future__ import annotations

import time

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.context import (
    child_traceparent,
    clean_request_id,
    request_id_var,
    traceparent_var,
)
from services.common.logs import get_logger

_access_log = get_logger("quarry.access")


def enter_request(given_id: str | None, given_trace: str | None) -> tuple[str, str]:
    """The request's id and trace context, bound to its logs and to the calls it makes."""
    request_id = clean_request_id(given_id)
    traceparent = child_traceparent(given_trace)
    request_id_var.set(request_id)
    traceparent_var.set(traceparent)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id, traceparent


def log_access(method: str, path: str, status: int, started: float, traceparent: str) -> None:
    """One access line per request; the raw path is fine in logs (not a metric label)."""
    _access_log.info(
        "http_request",
        method=method,
        path=path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        traceparent=traceparent,
    )


class RequestContextMiddleware:
    """Accepts or makes ``X-Request-ID``, continues ``traceparent``, and binds both to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id = given_trace = None
        for name, value in scope["headers"]:  # ASGI servers give header names lowercased
            if name == b"x-request-id":
                given_id = value.decode("latin-1")
            elif name == b"traceparent":
                given_trace = value.decode("latin-1")
        request_id, traceparent = enter_request(given_id, given_trace)
        scope.setdefault("state", {})["request_id"] = request_id

        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                out = MutableHeaders(scope=message)
                out["x-request-id"] = request_id
                out["traceparent"] = traceparent
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_access(scope["method"], scope["path"], status, started, traceparent)
