"""Who is signed in to the console: the session's key, as a page dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.common.errors import APIError
from services.console.sessions import Session
from services.gateway.auth import Gatekeeper, session_of
from services.gateway.keys import ApiKey


class SignInRequired(Exception):
    """No live session: the page answers with the sign-in page instead."""


@dataclass(frozen=True)
class Viewer:
    key: ApiKey
    session: Session

    def can(self, scope: str) -> bool:
        return scope in self.key.scopes

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token


async def viewer(request: Request) -> Viewer:
    """A dependency: the signed-in key; SignInRequired when the session is gone or its key revoked.

    It only says what to show: each call a page makes still goes through the public API's checks.
    """
    session = await session_of(request)
    if session is None:
        raise SignInRequired
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    try:
        admitted = await gatekeeper.by_id(session.key_id)
    except APIError as exc:
        raise SignInRequired from exc
    return Viewer(admitted.key, session)
