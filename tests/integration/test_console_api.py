"""The API the console stands on: the job list, /v1/models on the embedder and llm, /v1/status."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.integration.conftest import bearer as _auth
from tests.integration.ingest_jobs import finished


async def _submit(gateway: httpx.AsyncClient, key: str, collection: str, text: str) -> str:
    response = await gateway.post(
        f"/v1/collections/{collection}/documents",
        json={"documents": [{"_id": "d1", "title": "t", "text": text}]},
        headers=_auth(key),
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def test_the_job_list_filters_pages_and_keeps_to_the_keys_collections(
    gateway: httpx.AsyncClient, make_key: KeyFactory, collection_name: str
) -> None:
    mine, other = collection_name, f"{collection_name}_x"
    wide = await make_key({"ingest"})
    narrow = await make_key({"ingest"}, {mine})
    async with gateway_as(gateway, wide) as client:
        # One after the other: two jobs writing one document at once can both keep their chunks.
        first = await _submit(gateway, wide, mine, "first words")
        assert (await finished(client, first))["state"] == "completed"
        second = await _submit(gateway, wide, mine, "second words")
        await finished(client, second)
    theirs = await _submit(gateway, wide, other, "other words")

    listed = await gateway.get("/v1/jobs", params={"collection": mine}, headers=_auth(wide))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [j["job_id"] for j in body["jobs"]] == [second, first]  # newest first
    assert body["total"] == 2 and body["jobs"][0]["counts"]["updated"] == 1

    page = await gateway.get(
        "/v1/jobs", params={"collection": mine, "limit": 1, "offset": 1}, headers=_auth(wide)
    )
    assert [j["job_id"] for j in page.json()["jobs"]] == [first] and page.json()["total"] == 2
    completed = await gateway.get(
        "/v1/jobs",
        params=[("collection", mine), ("collection", other), ("state", "completed")],
        headers=_auth(wide),
    )
    assert {first, second} <= {j["job_id"] for j in completed.json()["jobs"]}
    assert all(j["state"] == "completed" for j in completed.json()["jobs"])

    # A key limited to one collection lists only its jobs, unasked, and may not name another's.
    own = await gateway.get("/v1/jobs", headers=_auth(narrow))
    assert own.status_code == 200
    assert {j["collection"] for j in own.json()["jobs"]} == {mine}
    assert theirs not in {j["job_id"] for j in own.json()["jobs"]}
    refused = await gateway.get("/v1/jobs", params={"collection": other}, headers=_auth(narrow))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "collection_forbidden"
    query_only = await make_key({"query"})
    assert (await gateway.get("/v1/jobs", headers=_auth(query_only))).status_code == 403
    bad = await gateway.get("/v1/jobs", params={"state": "sleeping"}, headers=_auth(wide))
    assert bad.status_code == 422

    collections = (await gateway.get("/v1/collections", headers=_auth(narrow))).json()["collections"]
    assert [(c["name"], c["documents"]) for c in collections] == [(mine, 1)]
    assert collections[0]["chunks"] >= 1
    for name in (mine, other):
        await gateway.delete(f"/v1/collections/{name}", headers=_auth(wide))


def gateway_as(gateway: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    """The gateway client with ``key`` on every request (for ``finished``)."""
    return httpx.AsyncClient(base_url=str(gateway.base_url), headers=_auth(key), timeout=60)


@pytest.mark.parametrize("service", ["embedder", "llm"])
async def test_the_openai_client_lists_the_model(suite: Suite, service: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{suite.url(service)}/v1", api_key="unused") as client:
        models = [m async for m in client.models.list()]
    assert len(models) == 1
    expected = {"embedder": "all-MiniLM-L6-v2", "llm": "SmolLM2-135M-Instruct"}[service]
    assert models[0].id == expected and models[0].object == "model"
    if service == "embedder":
        assert (models[0].model_extra or {}).get("dimensions") == 384


async def test_status_lists_every_service_for_admin_and_ops_keys_only(
    gateway: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    for scopes in ({"admin"}, {"ops"}):
        response = await gateway.get("/v1/status", headers=_auth(await make_key(scopes)))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert set(body["services"]) == {"gateway", "rag", "ingest", "embedder", "llm"}
        assert body["services"]["rag"]["checks"] == {"embedder": "ok", "milvus": "ok"}
        assert response.headers["x-ratelimit-limit"]
    for scopes in ({"query"}, {"ingest"}):
        refused = await gateway.get("/v1/status", headers=_auth(await make_key(scopes)))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"


async def test_status_figures_come_from_each_services_metrics_and_grow(
    gateway: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    headers = _auth(await make_key({"ops"}))
    before = (await gateway.get("/v1/status", headers=headers)).json()["services"]
    for name in ("gateway", "rag", "ingest", "embedder", "llm"):
        figures = before[name]["figures"]
        assert "error" not in figures, (name, figures)
        assert figures["requests_total"] >= 0
    assert "degraded_answers_total" in before["rag"]["figures"]
    for name in ("embedder", "llm", "ingest"):
        assert before[name]["figures"]["queue_depth"] is not None, name

    query_key = await make_key({"query"})
    for _ in range(3):
        searched = await gateway.post(
            "/v1/search", json={"query": "figures", "collection": "nothing_here"}, headers=_auth(query_key)
        )
        assert searched.status_code < 500, searched.text
    await asyncio.sleep(0.6)  # longer than the shortest window a rate is given for
    after = (await gateway.get("/v1/status", headers=headers)).json()["services"]
    for name in ("gateway", "rag"):
        old, new = before[name]["figures"], after[name]["figures"]
        assert new["requests_total"] >= old["requests_total"] + 3, (name, old, new)
        assert new["requests_per_s"] is not None and new["requests_per_s"] > 0
        p50, p99 = new["latency_p50_s"], new["latency_p99_s"]
        assert 0 < p50 <= p99 <= 60, (name, new)
    hit_rate = after["rag"]["figures"].get("cache_hit_rate")
    assert hit_rate is None or 0.0 <= hit_rate <= 1.0


async def _ingest_gauges(suite: Suite) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=suite.url("ingest"), timeout=10) as client:
        text = (await client.get("/metrics")).text
    names = ("quarry_ingest_queue_depth", "quarry_ingest_jobs_running")
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name in names
    }


async def test_ingest_queue_depth_counts_jobs_no_worker_has_taken(
    suite: Suite, gateway: httpx.AsyncClient, make_key: KeyFactory, collection_name: str
) -> None:
    ops = _auth(await make_key({"ops"}))
    ingest_key = await make_key({"ingest"})
    idle = {"quarry_ingest_queue_depth": 0, "quarry_ingest_jobs_running": 0}
    assert await _ingest_gauges(suite) == idle
    # The suite's only worker stops, so the jobs wait in the Redis queue.
    suite.children["ingest-worker"].stop()
    try:
        jobs = [await _submit(gateway, ingest_key, f"{collection_name}_{i}", "words") for i in range(2)]
        assert await _ingest_gauges(suite) == {**idle, "quarry_ingest_queue_depth": 2}
        status = (await gateway.get("/v1/status", headers=ops)).json()
        assert status["services"]["ingest"]["figures"]["queue_depth"] == 2
    finally:
        suite.restart("ingest-worker")
    async with gateway_as(gateway, ingest_key) as client:
        for job in jobs:
            assert (await finished(client, job))["state"] == "completed"
    assert await _ingest_gauges(suite) == idle
    for i in range(2):
        await gateway.delete(f"/v1/collections/{collection_name}_{i}", headers=_auth(ingest_key))
