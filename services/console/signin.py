"""Sign-in and sign-out: a pasted API key is exchanged for a server-side session.

Signing in is guarded against login CSRF by a double-submitted token: the form carries the value
of a short-lived HttpOnly cookie set with it, which another site can neither read nor set.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.common.errors import APIError
from services.console.config import ConsoleSettings
from services.console.pages_common import render
from services.console.sessions import CSRF_FIELD, SESSION_COOKIE, SessionStore
from services.gateway.auth import Gatekeeper, session_of

_SIGN_IN_COOKIE = "quarry_sign_in"
_SIGN_IN_TTL_S = 600


def _set_cookie(response: Response, settings: ConsoleSettings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )


def build_sign_in_router(settings: ConsoleSettings) -> APIRouter:
    router = APIRouter()

    def sign_in_page(request: Request, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(32)
        response = render(request, "sign_in.html", {"sign_in_token": token, "error": error}, status=status)
        _set_cookie(response, settings, _SIGN_IN_COOKIE, token, _SIGN_IN_TTL_S)
        return response

    @router.get("/console/sign-in", include_in_schema=False)
    async def show(request: Request) -> Response:
        return sign_in_page(request)

    @router.post("/console/sign-in", include_in_schema=False)
    async def sign_in(
        request: Request, api_key: str = Form(""), csrf_token: str = Form("", alias=CSRF_FIELD)
    ) -> Response:
        expected = request.cookies.get(_SIGN_IN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected, csrf_token):
            return sign_in_page(request, "The sign-in form expired; try again.", 403)
        gatekeeper: Gatekeeper = request.app.state.gatekeeper
        try:
            admitted = await gatekeeper.authenticate(api_key.strip())
        except APIError as exc:
            if exc.status >= 500:
                raise
            return sign_in_page(request, "That API key is not valid (or was revoked).", 401)
        sessions: SessionStore = request.app.state.console_sessions
        session_id, _ = await sessions.create(admitted.key.key_id)
        response = RedirectResponse("/console/ask", status_code=303)
        _set_cookie(response, settings, SESSION_COOKIE, session_id, sessions.ttl_s)
        response.delete_cookie(_SIGN_IN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.post("/console/sign-out", include_in_schema=False)
    async def sign_out(request: Request, csrf_token: str = Form("", alias=CSRF_FIELD)) -> Response:
        session = await session_of(request)
        if session is not None:
            if not session.csrf_matches(csrf_token):
                raise APIError(403, "csrf_failed", "missing or wrong CSRF token for this session")
            sessions: SessionStore = request.app.state.console_sessions
            await sessions.end(request.cookies[SESSION_COOKIE])
        response = RedirectResponse("/console/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router
