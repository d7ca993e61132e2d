"""The service-to-service client's transport: which failures it resends and how it reports them."""

from __future__ import annotations

import httpx
import pytest

from services.common.http_client import _GoawayRetryTransport


class _Scripted(httpx.AsyncBaseTransport):
    """Pure stand-in for httpcore: raises the given errors in turn, then answers 200."""

    def __init__(self, *errors: Exception) -> None:
        self._errors = list(errors)
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self._errors:
            raise self._errors.pop(0)
        return httpx.Response(200, request=request)


REQUEST = httpx.Request("POST", "http://llm/v1/chat/completions")


async def test_a_goaway_is_resent_once() -> None:
    inner = _Scripted(httpx.RemoteProtocolError("goaway"))
    response = await _GoawayRetryTransport(inner).handle_async_request(REQUEST)
    assert response.status_code == 200 and inner.calls == 2


async def test_httpcores_semaphore_overflow_is_a_transport_error_not_resent() -> None:
    inner = _Scripted(ValueError("semaphore released too many times"))
    with pytest.raises(httpx.TransportError) as caught:
        await _GoawayRetryTransport(inner).handle_async_request(REQUEST)
    assert isinstance(caught.value.__cause__, ValueError)
    assert inner.calls == 1  # possibly processed: not sent again


async def test_another_value_error_is_not_disguised() -> None:
    inner = _Scripted(ValueError("something else"))
    with pytest.raises(ValueError, match="something else"):
        await _GoawayRetryTransport(inner).handle_async_request(REQUEST)
