"""Fixtures the gateway's integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.cli.suite import Suite


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP/1.1 client of the suite's gateway, as apps use it."""
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=120) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
