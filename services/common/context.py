"""Per-request context (request id, W3C trace context) carried in contextvars.

The server middleware fills these; the HTTP client reads them so every hop
downstream carries the same request id and trace.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
traceparent_var: ContextVar[str] = ContextVar("traceparent", default="")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_request_id() -> str:
    return secrets.token_hex(12)


def clean_request_id(value: str | None) -> str:
    """Accept a caller's id only if it is short and safe to echo into headers and logs."""
    if value and _REQUEST_ID_RE.match(value):
        return value
    return new_request_id()


def child_traceparent(incoming: str | None) -> str:
    """Continue the caller's trace with a new span id, or start a new trace."""
    match = _TRACEPARENT_RE.match(incoming or "")
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def current_request_id() -> str:
    return request_id_var.get()
