"""Mounts the console on the gateway: its pages, sign-in, static files and session store."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from services.console.config import ConsoleSettings
from services.console.pages import build_pages_router
from services.console.pages_common import STATIC_DIR, is_htmx
from services.console.sessions import SESSION_COOKIE, SessionStore
from services.console.signin import build_sign_in_router
from services.console.viewer import SignInRequired


async def _to_sign_in(request: Request, _: Exception) -> Response:
    if is_htmx(request):  # a fragment request: htmx follows this header with a full page load
        response = Response(status_code=401, headers={"hx-redirect": "/console/sign-in"})
    else:
        response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def mount_console(app: FastAPI, redis: Any, settings: ConsoleSettings | None = None) -> None:
    """Adds /console to the gateway; sessions live in the gateway's Redis."""
    settings = settings or ConsoleSettings()
    if not settings.enabled:
        app.state.console_sessions = None
        return
    app.state.console_sessions = SessionStore(redis, settings.session_ttl_s)
    app.include_router(build_sign_in_router(settings))
    app.include_router(build_pages_router())
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_exception_handler(SignInRequired, _to_sign_in)
