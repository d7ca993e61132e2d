"""Service-to-service hops speak HTTP/2 cleartext (prior knowledge), not HTTP/1.1."""

from __future__ import annotations

import uuid

from services.cli.suite import Suite
from services.common.context import request_id_var
from services.common.embeddings_client import EmbeddingsClient
from services.common.http_client import create_http2_client
from tests.service_logs import lines_for


async def test_rag_to_embedder_client_speaks_http2(suite: Suite) -> None:
    # The same client class rag uses for its embedder hop.
    client = EmbeddingsClient(suite.url("embedder"))
    try:
        response = await client.http.post("/v1/embeddings", json={"input": "hello"})
        assert response.http_version == "HTTP/2"
        assert len(response.json()["data"][0]["embedding"]) == 384
    finally:
        await client.aclose()


async def test_every_service_answers_over_h2c_and_echoes_request_id(suite: Suite) -> None:
    token = request_id_var.set("test-req-123")
    try:
        for name in ("embedder", "llm", "rag", "gateway"):
            async with create_http2_client(suite.url(name)) as client:
                response = await client.get("/health/ready")
                assert response.http_version == "HTTP/2", name
                assert response.status_code == 200, (name, response.text)
                assert response.headers["x-request-id"] == "test-req-123"
                assert response.headers["traceparent"].startswith("00-")
    finally:
        request_id_var.reset(token)


async def test_metrics_are_exposed_by_every_service(suite: Suite) -> None:
    for name in ("embedder", "llm", "rag", "gateway"):
        async with create_http2_client(suite.url(name)) as client:
            await client.get("/health/live")
            text = (await client.get("/metrics")).text
            assert f'quarry_http_requests_total{{method="GET",route="/health/live",service="{name}"' in text


async def test_request_id_and_trace_reach_the_next_service_and_its_logs(suite: Suite) -> None:
    request_id = "trace-me-" + uuid.uuid4().hex[:8]
    trace_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with create_http2_client(suite.url("rag")) as client:
        # An unknown collection: rag still embeds the question first, so the hop happens.
        response = await client.post(
            "/v1/query", json={"question": "hello", "collection": "no_such_collection"}, headers=headers
        )
    assert response.status_code == 404
    assert response.json()["error"]["request_id"] == request_id
    embedder_lines = lines_for(suite.data_dir / "logs" / "embedder.log", request_id)
    assert embedder_lines, "the embedder never saw the request id"
    access = [line for line in embedder_lines if line.get("event") == "http_request"]
    assert access and access[0]["path"] == "/v1/embeddings"
    assert access[0]["traceparent"].split("-")[1] == trace_id
