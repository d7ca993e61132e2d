"""The whole suite, as a newcomer would use it: ingest the examples, ask through the gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.answer_eval import load_qa, score
from services.cli.suite import Suite
from tests.conftest import KeyFactory

QA = Path(__file__).resolve().parents[2] / "examples" / "qa" / "docs_qa.jsonl"

QUESTION = "What HTTP status does a client over its rate limit receive, and with which header?"


@pytest.fixture
async def examples_collection(
    examples_dir: Path, collection_name: str, ingest_settings: IngestSettings
) -> str:
    expected = len(list(examples_dir.glob("*.md")))  # noqa: ASYNC240 - a six-file folder
    report = await ingest_path(examples_dir, collection_name, ingest_settings)
    assert report.failed == 0 and report.added == expected
    return collection_name


async def test_question_is_answered_with_citation_then_cached(
    suite: Suite, examples_collection: str, make_key: KeyFactory
) -> None:
    key = await make_key()
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=300) as client:
        # Short answers keep the CPU model quick; a degraded (uncached) answer would void the test.
        body = {"question": QUESTION, "collection": examples_collection, "top_k": 3, "max_tokens": 48}
        headers = {"authorization": f"Bearer {key}"}
        first = await client.post("/v1/query", json=body, headers=headers)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["degraded"] == [], answer["degraded"]
        assert answer["answer"]
        assert answer["cached"] is False
        assert "gateway.md" in [c["doc_id"] for c in answer["citations"]]
        assert answer["request_id"] == first.headers["x-request-id"]

        second = await client.post("/v1/query", json=body, headers=headers)
        assert second.status_code == 200
        assert second.json()["cached"] is True
        assert second.json()["answer"] == answer["answer"]
        assert second.json()["request_id"] != answer["request_id"]


# A handful of the QA set's test questions, asked as an app would: facts are checked, and
# out-of-scope questions must get no made-up answer.
FACT_CHECKS = [
    "gateway-port",
    "rate-limit-exceeded",
    "llm-runtime",
    "embedder-model",
    "capital-france",
    "license",
]


@pytest.mark.parametrize("item_id", FACT_CHECKS)
async def test_answers_state_the_documents_facts_or_abstain(
    suite: Suite, examples_collection: str, make_key: KeyFactory, item_id: str
) -> None:
    item = next(i for i in load_qa(QA) if i.id == item_id)
    key = await make_key()
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=300) as client:
        body = {"question": item.question, "collection": examples_collection}
        response = await client.post("/v1/query", json=body, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert score(item, answer).correct, (item.question, answer["answer"])
    assert answer["safety"]["grounded"] is True
    assert all(s["supported"] for s in answer["answer_sentences"])


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer qk_0000000000000000_" + "x" * 43, "Basic abc", "Bearer", "Bearer not-a-key"],
)
async def test_missing_or_wrong_key_is_401_with_json_error(suite: Suite, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=suite.url("gateway")) as client:
        response = await client.post("/v1/query", json={"question": "hi"}, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] in {"unauthorized", "invalid_api_key"}
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


async def test_rate_limit_gives_429_with_retry_after(
    suite: Suite, examples_collection: str, make_key: KeyFactory
) -> None:
    # An hour-long window: on a slow machine a minute window could slide between requests.
    key = await make_key(rate_limit="2/hour")
    headers = {"authorization": f"Bearer {key}"}
    body = {"question": QUESTION, "collection": examples_collection}
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=300) as client:
        statuses = []
        for _ in range(3):
            response = await client.post("/v1/query", json=body, headers=headers)
            statuses.append(response.status_code)
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.json()["error"]["code"] == "rate_limited"


def test_status_from_another_shell_sees_every_process(suite: Suite) -> None:
    # `quarry status` builds a Suite of its own and runs none of the processes it reports on;
    # the worker has no port, so it must be found through the job queue's worker registry.
    observer = Suite(data_dir=suite.data_dir, redis_url=suite.redis_url, ports=suite.ports)
    observer.define()
    assert observer.status() == dict.fromkeys(suite.children, "ready")
