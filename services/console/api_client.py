"""The console's calls to the gateway's own public API, in process, as the signed-in session.

Every page reads and changes through the same routes apps use, so the same scope checks, collection
lists, rate limits and CSRF check apply: the console can do nothing its key could not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request

from services.console.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE

_BASE_URL = "http://gateway.internal"
_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def error(self) -> str:
        """The API's error message ("" on success)."""
        if self.ok:
            return ""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or f"HTTP {self.status}")

    @property
    def code(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code", "")) if isinstance(error, dict) else ""


class PublicAPI:
    """One browser request's view of the public API: its cookie and the CSRF token it sent."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        files: Any = None,
    ) -> Answer:
        # In a task of its own: the inner request sets its own request id and context
        # variables, which must not replace the outer request's.
        response = await asyncio.create_task(
            self._client.request(method, path, json=json, params=params, files=files)
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        return Answer(response.status_code, body)


async def _submitted_csrf(request: Request) -> str:
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    return token or ""


async def public_api(request: Request) -> AsyncIterator[PublicAPI]:
    """A dependency: the public API as this request's session, carrying the token it sent (if any)."""
    headers = {}
    if session_id := request.cookies.get(SESSION_COOKIE):
        headers["cookie"] = f"{SESSION_COOKIE}={session_id}"
    if token := await _submitted_csrf(request):
        headers[CSRF_HEADER] = token
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=_BASE_URL, headers=headers, timeout=_TIMEOUT_S
    ) as client:
        yield PublicAPI(client)
