"""One JSON error envelope for every service: ``{"error": {"code", "message", "request_id"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from services.common.context import current_request_id
from services.common.disconnect import CLIENT_CLOSED_REQUEST, ClientDisconnected
from services.common.logs import get_logger

_log = get_logger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


class APIError(Exception):
    """Raise anywhere in a request to answer with the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": current_request_id()}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=dict(headers or {}))


def _describe_validation(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "request body is not valid JSON"
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid_request", "; ".join(parts)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _client_left(_: Request, __: Exception) -> Response:
    # The client left, while sending its body or while its answer was made. Nobody reads this
    # answer, but logs and metrics do: a 400 or a 500 there would report an error that wasn't.
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's 400 for a body cut off
        return await _client_left(request, exc)
    code = _STATUS_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code, message = _describe_validation(exc)
    return error_response(400 if code == "invalid_json" else 422, code, message)


def unhandled_response(exc: BaseException) -> JSONResponse:
    """A 500 for a fault of ours: logged with its stack trace, which never reaches the caller."""
    _log.error("unhandled_error", exc_info=exc)
    return error_response(500, "internal_error", "internal error")


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    return unhandled_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(ClientDisconnected, _client_left)
    app.add_exception_handler(Exception, _unhandled)
