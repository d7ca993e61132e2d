"""The embedder as a real process over HTTP/2: batching, limits, backpressure, openai, readiness."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from services.cli.suite import free_port
from services.common.http_client import create_http2_client

_START_TIMEOUT_S = 240.0

# Passages of varied length, so batches hold padding that must not leak into vectors.
_TEXTS = [
    "Aspirin inhibits platelet aggregation.",
    "Mitochondria are the powerhouse of the cell, producing ATP through oxidative phosphorylation.",
    "short",
    " ".join(["Randomised controlled trials compare an intervention against a control group."] * 4),
    "The BRCA1 gene is associated with hereditary breast and ovarian cancer risk.",
    "Vitamin D deficiency has been linked to a higher risk of respiratory infections in children.",
    "CRISPR-Cas9 edits genomes by cutting DNA at sites chosen by a guide RNA.",
    "Statins lower LDL cholesterol.",
]


class _Embedder:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"embedder-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.embedder"],
                env={**os.environ, "QUARRY_EMBEDDER_PORT": str(self.port), "HF_HUB_OFFLINE": "1", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, status: int = 200) -> httpx.Response:
        """Polls readiness until it answers ``status``; returns that answer."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedder exited: {self.log.read_text()[-2000:]}")
            try:
                response = httpx.get(f"{self.url}/health/ready", timeout=5)
                if response.status_code == status:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"embedder never answered {status}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Embedder]:
    # A long wait makes concurrent requests share passes reliably; small request limit for tests.
    server = _Embedder(
        tmp_path_factory.mktemp("embedder"),
        {"QUARRY_EMBEDDER_MAX_WAIT_MS": "100", "QUARRY_EMBEDDER_MAX_ITEMS_PER_REQUEST": "16"},
    )
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(embedder: _Embedder) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http2_client(embedder.url, timeout_s=120) as http:
        yield http


async def _embed(http: httpx.AsyncClient, body: dict[str, object]) -> np.ndarray:
    response = await http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def _assert_same_text(got: np.ndarray, expected: np.ndarray) -> None:
    """The vectors of the same texts, embedded in other batches: bf16 (auto on CPUs that have
    it) moves a vector slightly with its batch companions, so they agree to cosine 0.9999, the
    bar bf16 keeps to fp32; another text's vector is nowhere near."""
    got, expected = np.atleast_2d(got), np.atleast_2d(expected)
    cosines = np.sum(got * expected, axis=1)
    assert float(cosines.min()) >= 0.9999, cosines


async def _batches(http: httpx.AsyncClient) -> tuple[float, float]:
    """(batches run, texts run) so far, from the service's own metrics."""
    text = (await http.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("quarry_embedder_batch_size_count", "quarry_embedder_batch_size_sum")):
            name, value = line.split()
            values[name] = float(value)
    return values["quarry_embedder_batch_size_count"], values["quarry_embedder_batch_size_sum"]


async def test_ready_only_after_warm_up_went_through_the_batcher(client: httpx.AsyncClient) -> None:
    # First test on this server: the fixture waited for 200, and only the warm-up has run.
    ready = await client.get("/health/ready")
    assert ready.json() == {"status": "ready", "checks": {"model": "ok"}}
    metrics = (await client.get("/metrics")).text
    assert "quarry_embedder_model_ready 1.0" in metrics
    assert await _batches(client) == (1.0, 32.0)  # one pass of max_batch_size texts


async def test_concurrent_callers_get_their_own_vectors_identical_to_unbatched(
    client: httpx.AsyncClient,
) -> None:
    # Unbatched: one text per forward pass, each request alone.
    alone = [(await _embed(client, {"input": t}))[0] for t in _TEXTS]
    before = await _batches(client)
    batched = await asyncio.gather(*(_embed(client, {"input": t}) for t in _TEXTS))
    after = await _batches(client)

    assert after[1] - before[1] == len(_TEXTS)
    assert after[0] - before[0] < len(_TEXTS), "concurrent requests should have shared passes"
    for one, together in zip(alone, batched, strict=True):
        _assert_same_text(together[0], one)
        assert abs(float(np.linalg.norm(one)) - 1) < 1e-5
    # Different texts, different vectors: nobody got a neighbour's row.
    assert len({v.tobytes() for v in alone}) == len(_TEXTS)


async def test_list_input_keeps_order_and_matches_single_requests(client: httpx.AsyncClient) -> None:
    listed = await _embed(client, {"input": _TEXTS})
    for i, text in enumerate(_TEXTS):
        single = (await _embed(client, {"input": text}))[0]
        _assert_same_text(listed[i], single)


async def test_base64_dimensions_and_usage(client: httpx.AsyncClient) -> None:
    full = await _embed(client, {"input": _TEXTS[:2]})
    response = await client.post(
        "/v1/embeddings",
        json={"input": _TEXTS[:2], "encoding_format": "base64", "dimensions": 64, "model": "mini"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mini"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    for row, d in zip(full, body["data"], strict=True):
        short = np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        assert short.shape == (64,)
        np.testing.assert_allclose(short, row[:64] / np.linalg.norm(row[:64]), atol=1e-5)


async def test_the_openai_client_works_unchanged(embedder: _Embedder, client: httpx.AsyncClient) -> None:
    expected = await _embed(client, {"input": _TEXTS[:3]})
    async with openai.AsyncOpenAI(base_url=f"{embedder.url}/v1", api_key="unused") as oai:
        default = await oai.embeddings.create(model="all-MiniLM-L6-v2", input=_TEXTS[:3])
        floats = await oai.embeddings.create(
            model="all-MiniLM-L6-v2", input=_TEXTS[0], encoding_format="float"
        )
        short = await oai.embeddings.create(model="all-MiniLM-L6-v2", input=_TEXTS[:1], dimensions=32)
        with pytest.raises(openai.APIStatusError) as caught:
            await oai.embeddings.create(model="all-MiniLM-L6-v2", input="")

    np.testing.assert_allclose(np.array([d.embedding for d in default.data]), expected, atol=1e-5)
    _assert_same_text(np.array(floats.data[0].embedding), expected[0])
    assert len(short.data[0].embedding) == 32
    assert default.usage.prompt_tokens > 0
    assert caught.value.status_code == 422


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"input": []}, 422, "empty_input", "at least one"),
        ({"input": ""}, 422, "empty_input", "input[0]"),
        ({"input": ["ok", ""]}, 422, "empty_input", "input[1]"),
        ({"input": ["x"] * 17}, 413, "too_many_inputs", "at most 16"),
        ({"input": "word " * 400}, 413, "input_too_long", "limit is 256 tokens"),
        ({"input": "ok", "dimensions": 1000}, 422, "invalid_dimensions", "384"),
        ({"input": "ok", "encoding_format": "int8"}, 422, "invalid_request", "encoding_format"),
        ({"input": 42}, 422, "invalid_request", "input"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    client: httpx.AsyncClient, body: dict[str, object], status: int, code: str, says: str
) -> None:
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]
    assert error["request_id"]


async def test_truncate_true_embeds_an_over_long_text_as_its_first_tokens(
    client: httpx.AsyncClient,
) -> None:
    long = " ".join(f"word{i}" for i in range(600))
    response = await client.post("/v1/embeddings", json={"input": long, "truncate": True})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 256
    cut = np.array(response.json()["data"][0]["embedding"])
    # The same text with a different tail past the limit: the same vector.
    other = long + " entirely different ending that the model never sees"
    again = await _embed(client, {"input": other, "truncate": True})
    np.testing.assert_allclose(again[0], cut, atol=1e-5)


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_full_queue_answers_429_with_retry_after_and_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Room for one 4-text request at a time, one text per pass: a burst must overflow.
    server = _Embedder(
        tmp_path_factory.mktemp("tiny-queue"),
        {
            "QUARRY_EMBEDDER_MAX_QUEUE_ITEMS": "4",
            "QUARRY_EMBEDDER_MAX_ITEMS_PER_REQUEST": "4",
            "QUARRY_EMBEDDER_MAX_BATCH_SIZE": "1",
        },
    )
    try:
        await asyncio.to_thread(server.wait)
        async with create_http2_client(server.url, timeout_s=300) as http:
            burst = [{"input": [f"{t} {i}" for t in _TEXTS[:4]]} for i in range(24)]
            responses = await asyncio.gather(*(http.post("/v1/embeddings", json=b) for b in burst))
            statuses = [r.status_code for r in responses]
            assert set(statuses) == {200, 429}, statuses
            refused = next(r for r in responses if r.status_code == 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
            metrics = (await http.get("/metrics")).text
            assert f"quarry_embedder_rejected_total {float(statuses.count(429))}" in metrics
            # Once the burst has drained the same server serves again, no restart.
            again = await _embed(http, {"input": _TEXTS[:4]})
            assert again.shape == (4, 384)
    finally:
        server.stop()


async def test_unloadable_model_is_unready_and_embeddings_answer_503(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    server = _Embedder(
        tmp_path_factory.mktemp("no-model"), {"QUARRY_EMBEDDER_MODEL": str(tmp_path / "no-such-model")}
    )
    try:
        # The process stays up and says why it is not ready, rather than crashing.
        ready = await asyncio.to_thread(server.wait, 503)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while "failed to load" not in ready.text and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            ready = await asyncio.to_thread(httpx.get, f"{server.url}/health/ready")
        assert ready.status_code == 503
        assert "failed to load" in ready.json()["checks"]["model"]
        assert "no-such-model" not in ready.text  # the path stays in the log
        async with create_http2_client(server.url, timeout_s=30) as http:
            assert (await http.get("/health/live")).status_code == 200
            response = await http.post("/v1/embeddings", json={"input": "hello"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "model_unavailable"
            assert "retry-after" in response.headers
            assert "quarry_embedder_model_ready 0.0" in (await http.get("/metrics")).text
    finally:
        server.stop()


async def test_queries_sent_during_a_large_bulk_request_finish_before_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = _Embedder(tmp_path_factory.mktemp("lanes"), {})  # default lanes and batch budgets
    try:
        await asyncio.to_thread(server.wait)
        # 256 passages of ~60 tokens: many bulk passes of at most bulk_batch_tokens each.
        passages = [f"{_TEXTS[i % len(_TEXTS)]} Passage {i} of the bulk load." for i in range(256)]
        async with create_http2_client(server.url, timeout_s=600) as http:
            warm_up = await _batches(http)
            # No priority field: a list from an unknown caller is bulk.
            bulk = asyncio.create_task(_embed(http, {"input": passages}))
            for _ in range(30_000):  # bounded poll (another process): until its first pass ran
                if (await _batches(http))[0] > warm_up[0]:
                    break
                await asyncio.sleep(0.01)
            queries = await asyncio.gather(
                _embed(http, {"input": "Which gene raises breast cancer risk?"}),  # unknown: a query
                _embed(http, {"input": _TEXTS[:3], "priority": "query"}),
            )
            assert not bulk.done(), "the queries should have run ahead of the bulk texts"
            vectors = await bulk
            metrics = (await http.get("/metrics")).text

        assert [q.shape for q in queries] == [(1, 384), (3, 384)]
        assert vectors.shape == (256, 384)
        assert 'quarry_embedder_queue_seconds_count{priority="query"}' in metrics
        assert 'quarry_embedder_queue_seconds_count{priority="bulk"} 256.0' in metrics
    finally:
        server.stop()
