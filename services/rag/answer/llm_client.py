"""Client for any OpenAI-compatible chat completions server (ours, vLLM, a hosted API)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.common.http_client import create_http2_client


class GenerationUnavailable(Exception):
    pass


class GenerationRejected(Exception):
    """The LLM answered 4xx: the request (or rag's configuration) is at fault, not the LLM."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check(response: httpx.Response, body: bytes) -> None:
    if response.status_code == 200:
        return
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        try:
            message = str(json.loads(body)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode(errors="replace")
        raise GenerationRejected(response.status_code, message)
    raise GenerationUnavailable(f"llm answered {response.status_code}")


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ChatStream:
    """An open streaming completion: iterate ``deltas()``, then read ``usage``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def deltas(self) -> AsyncIterator[str]:
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk: dict[str, Any] = json.loads(data)
                if usage := chunk.get("usage"):
                    self.prompt_tokens = int(usage.get("prompt_tokens", 0))
                    self.completion_tokens = int(usage.get("completion_tokens", 0))
                for choice in chunk.get("choices") or []:
                    if text := (choice.get("delta") or {}).get("content"):
                        yield text
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise GenerationUnavailable(f"llm stream broke: {type(exc).__name__}") from exc
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 60.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._client = create_http2_client(base_url, timeout_s=timeout_s, headers=headers)
        self.model = model

    def _body(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": 0,
        }

    async def complete(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float
    ) -> Completion:
        try:
            response = await self._client.post(
                "/v1/chat/completions", json=self._body(messages, max_tokens, temperature)
            )
        except httpx.HTTPError as exc:
            raise GenerationUnavailable(f"llm unreachable: {type(exc).__name__}") from exc
        _check(response, response.content)
        payload = response.json()
        usage = payload.get("usage") or {}
        return Completion(
            text=payload["choices"][0]["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    async def open_stream(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float
    ) -> ChatStream:
        """Starts a streaming completion; returns once the server accepted it (status 200)."""
        body = {**self._body(messages, max_tokens, temperature), "stream": True}
        body["stream_options"] = {"include_usage": True}
        request = self._client.build_request("POST", "/v1/chat/completions", json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise GenerationUnavailable(f"llm unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            refusal = await response.aread()
            await response.aclose()
            _check(response, refusal)
        return ChatStream(response)

    async def max_tokens_cap(self, timeout_s: float) -> int | None:
        """The largest max_tokens the LLM takes, from its ``/v1/models`` card for this model:
        ``max_tokens`` (ours), else ``max_model_len`` (vLLM's); None when it names neither."""
        try:
            response = await self._client.get("/v1/models", timeout=timeout_s)
            response.raise_for_status()
            cards = response.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise GenerationUnavailable(f"llm model list unavailable: {type(exc).__name__}") from exc
        mine = [c for c in cards if isinstance(c, dict) and c.get("id") == self.model]
        for card in mine or cards[:1]:
            for name in ("max_tokens", "max_model_len"):
                value = card.get(name) if isinstance(card, dict) else None
                if isinstance(value, int) and value > 0:
                    return value
        return None

    async def aclose(self) -> None:
        await self._client.aclose()
