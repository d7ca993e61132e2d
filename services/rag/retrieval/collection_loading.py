"""Reloads a collection that Milvus forgot to keep loaded.

A restarted Milvus (Lite or standalone) comes back with collections released; searches
then fail with code 101 until someone loads them again. rag does so itself, so it
recovers from a Milvus restart without being restarted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.common.milvus_connect import connect_milvus


class CollectionLoader:
    def __init__(self, uri: str, token: str = "") -> None:
        self._uri = uri
        self._token = token
        self._client: Any = None  # connected on first need: a healthy rag never needs it

    async def load(self, collection: str) -> None:
        await asyncio.to_thread(self._load, collection)

    def _load(self, collection: str) -> None:
        if self._client is None:
            self._client = connect_milvus(self._uri, self._token, timeout=30)
        self._client.load_collection(collection)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
