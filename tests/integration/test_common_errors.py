"""Client mistakes get a 4xx with the JSON envelope on every service, never a 500."""

from __future__ import annotations

import pytest

from services.cli.suite import Suite
from services.common.http_client import create_http2_client

_POST_ROUTES = {
    "embedder": "/v1/embeddings",
    "llm": "/v1/chat/completions",
    "rag": "/v1/query",
}


@pytest.mark.parametrize("service", sorted(_POST_ROUTES))
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
    ],
)
async def test_bad_bodies_get_the_error_envelope(
    suite: Suite, service: str, body: bytes, status: int, code: str
) -> None:
    async with create_http2_client(suite.url(service)) as client:
        response = await client.post(
            _POST_ROUTES[service], content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("service", ["embedder", "llm", "rag", "gateway"])
async def test_unknown_route_is_404_envelope(suite: Suite, service: str) -> None:
    async with create_http2_client(suite.url(service)) as client:
        response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
