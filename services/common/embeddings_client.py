"""Client for an OpenAI-compatible ``/v1/embeddings`` endpoint (ours or any other)."""

from __future__ import annotations

from typing import Literal

import httpx

from services.common.http_client import create_http2_client

# Quarry's embedder runs "query" texts before "bulk" ones (an extension, like truncate).
Priority = Literal["query", "bulk"]


class EmbeddingsUnavailable(Exception):
    """The embedder could not be reached or answered with a server error."""


class EmbeddingsClient:
    def __init__(
        self,
        base_url: str,
        model: str = "all-MiniLM-L6-v2",
        timeout_s: float = 30.0,
        batch_size: int = 64,
        api_key: str = "",
        priority: Priority | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._client = create_http2_client(base_url, timeout_s=timeout_s, headers=headers)
        self._model = model
        self._batch_size = batch_size
        self._extra: dict[str, str] = {"priority": priority} if priority else {}

    @property
    def http(self) -> httpx.AsyncClient:
        return self._client

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            try:
                response = await self._client.post(
                    "/v1/embeddings",
                    json={"input": batch, "model": self._model, "truncate": True, **self._extra},
                )
            except httpx.HTTPError as exc:
                raise EmbeddingsUnavailable(f"embedder unreachable: {type(exc).__name__}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise EmbeddingsUnavailable(f"embedder answered {response.status_code}")
            response.raise_for_status()
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            vectors.extend(d["embedding"] for d in data)
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()
