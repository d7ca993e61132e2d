"""Console sessions in Redis: a pasted API key is exchanged for one, and the key never leaves.

The browser holds only a random session id (an HttpOnly, SameSite=Strict cookie); Redis holds the
key's id, a CSRF token and the expiry, under a hash of the session id, so a copy of Redis holds
no cookie that works. Ending a session deletes its record: the old cookie then admits nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "quarry_session"
# Sent by the console's scripts and htmx on every request that changes something.
CSRF_HEADER = "x-csrf-token"
# The same token, as a form field, for plain forms (sign-out).
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_PREFIX = "quarry:console:session:"


def _record_key(session_id: str) -> str:
    return _PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    key_id: str
    csrf_token: str
    expires_at: float

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token, presented)


class SessionStore:
    def __init__(self, redis: Any, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def create(self, key_id: str) -> tuple[str, Session]:
        """A new session for ``key_id``: its id (the cookie's value) and its record."""
        session_id = secrets.token_urlsafe(32)
        session = Session(key_id, secrets.token_urlsafe(32), time.time() + self.ttl_s)
        record = {"key_id": key_id, "csrf": session.csrf_token, "expires_at": session.expires_at}
        await self._redis.set(_record_key(session_id), json.dumps(record), ex=self.ttl_s)
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        raw = await self._redis.get(_record_key(session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        session = Session(record["key_id"], record["csrf"], float(record["expires_at"]))
        # Redis expires it too; this covers a record whose TTL was lost (a restore, a copy).
        return session if session.expires_at > time.time() else None

    async def end(self, session_id: str) -> None:
        await self._redis.delete(_record_key(session_id))
