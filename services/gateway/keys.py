"""API keys: stored in Redis as salted hashes only, checked in constant time.

A key reads ``qk_<id>_<secret>``. The id finds the record; the secret is never
stored, only HMAC-SHA256(salt, secret). Keys are random and long, so a fast
hash is enough (as for GitHub or Stripe tokens); a slow KDF would only add latency.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

# ops: the suite's status only (GET /v1/status), for those who watch services, not data.
SCOPES = frozenset({"query", "ingest", "admin", "ops"})
RATE_LIMIT_PATTERN = r"^\d{1,7}\s*/\s*(second|minute|hour|day)$"
_KEY_RE = re.compile(r"^qk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_RATE_LIMIT_RE = re.compile(RATE_LIMIT_PATTERN)


def parse_key(presented: str) -> tuple[str, str] | None:
    """Splits ``qk_<id>_<secret>`` into id and secret; None for any other shape."""
    match = _KEY_RE.fullmatch(presented)
    return (match.group(1), match.group(2)) if match else None


def _record_key(key_id: str) -> str:
    return f"quarry:apikey:{key_id}"


_INDEX = "quarry:apikeys"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    collections: frozenset[str] | None  # None: every collection
    rate_limit: str
    daily_token_quota: int | None = None
    created_at: float = field(default_factory=time.time)
    revoked: bool = False

    def may_use(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def grants(
        self, scopes: frozenset[str] | set[str], collections: frozenset[str] | set[str] | None
    ) -> bool:
        """Whether a key with these scopes and collections asks for nothing this one lacks."""
        if not set(scopes) <= self.scopes:
            return False
        return self.collections is None or (collections is not None and set(collections) <= self.collections)

    def covers(self, other: ApiKey) -> bool:
        return self.grants(other.scopes, other.collections)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "collections": None if self.collections is None else sorted(self.collections),
            "rate_limit": self.rate_limit,
            "daily_token_quota": self.daily_token_quota,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }


def _digest(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    """A key's record as kept in Redis: the key and the salted hash of its secret."""

    key: ApiKey
    salt: str
    digest: str

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(self.salt, secret))

    def dumps(self) -> str:
        return json.dumps({**self.key.public(), "salt": self.salt, "hash": self.digest})

    @classmethod
    def loads(cls, raw: bytes | str) -> StoredKey:
        record = json.loads(raw)
        collections = record.get("collections")
        key = ApiKey(
            key_id=record["id"],
            name=record["name"],
            scopes=frozenset(record["scopes"]),
            collections=None if collections is None else frozenset(collections),
            rate_limit=record["rate_limit"],
            daily_token_quota=record.get("daily_token_quota"),
            created_at=record.get("created_at", 0.0),
            revoked=bool(record.get("revoked", False)),
        )
        return cls(key, record["salt"], record["hash"])


class KeyStore:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def create(
        self,
        name: str,
        scopes: set[str],
        collections: set[str] | None,
        rate_limit: str,
        daily_token_quota: int | None = None,
    ) -> tuple[str, ApiKey]:
        """Returns the full secret (shown once) and the stored key."""
        if not scopes or not scopes <= SCOPES:
            raise ValueError(f"scopes must be a non-empty subset of {sorted(SCOPES)}")
        if not _RATE_LIMIT_RE.fullmatch(rate_limit):
            raise ValueError(f"rate limit {rate_limit!r} is not like '60/minute'")
        if daily_token_quota is not None and daily_token_quota < 1:
            raise ValueError("daily token quota must be at least 1")
        key = ApiKey(
            key_id=secrets.token_hex(8),
            name=name,
            scopes=frozenset(scopes),
            collections=None if collections is None else frozenset(collections),
            rate_limit=rate_limit,
            daily_token_quota=daily_token_quota,
        )
        secret, salt = secrets.token_urlsafe(32), secrets.token_hex(16)
        await self._save(StoredKey(key, salt, _digest(salt, secret)))
        await self._redis.sadd(_INDEX, key.key_id)
        return f"qk_{key.key_id}_{secret}", key

    async def _save(self, stored: StoredKey) -> None:
        await self._redis.set(_record_key(stored.key.key_id), stored.dumps())

    async def lookup(self, key_id: str) -> StoredKey | None:
        raw = await self._redis.get(_record_key(key_id))
        return None if raw is None else StoredKey.loads(raw)

    async def verify(self, presented: str) -> ApiKey | None:
        """The key for a presented secret, or None if unknown, wrong or revoked."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        stored = await self.lookup(parsed[0])
        if stored is None or not stored.matches(parsed[1]) or stored.key.revoked:
            return None
        return stored.key

    async def list(self) -> list[ApiKey]:
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await self._redis.smembers(_INDEX))
        records = await self._redis.mget([_record_key(i) for i in ids]) if ids else []
        return [StoredKey.loads(raw).key for raw in records if raw is not None]

    async def revoke(self, key_id: str) -> bool:
        stored = await self.lookup(key_id)
        if stored is None:
            return False
        await self._save(replace(stored, key=replace(stored.key, revoked=True)))
        return True
