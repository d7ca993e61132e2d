"""Client mistakes get a 4xx with the JSON envelope on every service, never a 500."""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit

import pytest

from services.cli.suite import Suite
from services.common.http_client import create_http2_client
from tests.conftest import KeyFactory
from tests.service_logs import access_line

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


def _leave_mid_body(suite: Suite, service: str, path: str, headers: str = "") -> int | None:
    """Declares 1,000 bytes of body, sends 14 and closes; the status the service logged."""
    request_id = uuid.uuid4().hex
    url = urlsplit(suite.url(service))
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
        f"content-length: 1000\r\nx-request-id: {request_id}\r\n{headers}\r\n"
    )
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port)) as conn:
        conn.sendall(head.encode() + b'{"input": "cut')
    line = access_line(suite.data_dir / "logs" / f"{service}.log", request_id)
    return None if line is None else int(line["status"])


@pytest.mark.parametrize("service", sorted(_POST_ROUTES))
def test_a_client_that_leaves_mid_body_is_logged_499_not_400(suite: Suite, service: str) -> None:
    """Nobody reads the answer, but a 400 would count in logs and metrics as a client error."""
    assert _leave_mid_body(suite, service, _POST_ROUTES[service]) == 499


async def test_a_client_that_leaves_mid_body_is_logged_499_by_the_gateway(
    suite: Suite, make_key: KeyFactory
) -> None:
    key = await make_key({"query"})
    auth = f"authorization: Bearer {key}\r\n"
    # A key this replica has not seen yet...
    assert _leave_mid_body(suite, "gateway", "/v1/search", auth) == 499
    async with create_http2_client(suite.url("gateway")) as client:
        await client.post("/v1/search", json={"query": "x"}, headers={"authorization": f"Bearer {key}"})
    # ...and one it has admitted before.
    assert _leave_mid_body(suite, "gateway", "/v1/search", auth) == 499
