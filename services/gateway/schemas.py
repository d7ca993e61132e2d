"""Wire schemas of the gateway's own routes (key administration)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.gateway.keys import RATE_LIMIT_PATTERN


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Literal["query", "ingest", "admin", "ops"]] = Field(min_length=1)
    collections: list[str] | None = None
    rate_limit: str = Field(default="60/minute", pattern=RATE_LIMIT_PATTERN)
    daily_token_quota: int | None = Field(default=None, ge=1)


class KeyInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    collections: list[str] | None
    rate_limit: str
    daily_token_quota: int | None
    created_at: float
    revoked: bool


class KeyCreated(KeyInfo):
    key: str = Field(description="The secret, shown only once.")
