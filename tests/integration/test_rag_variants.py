"""Answer variants against the running suite: the split, pins, the cache, feedback, reloads,
and answer records that outlive a restart of the Redis holding them.

rag and the gateway run here as their own processes beside the session's suite (sharing its
Milvus, models and key store), reading a variant file this module writes, and keeping answer
records in a Redis of their own with persistence on, which the tests restart.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Child, Suite, free_port, start_service
from tests.conftest import KeyFactory
from tests.integration.conftest import bearer

QA_SET = Path(__file__).resolve().parents[2] / "examples" / "qa" / "docs_qa.jsonl"
QUESTION = "How does the gateway rate limit clients?"
FILE: dict[str, Any] = {
    "control": "a",
    "variants": [
        {"name": "a", "version": 1, "weight": 90, "answer_mode": "extractive"},
        {"name": "b", "version": 1, "weight": 10, "answer_mode": "extractive", "top_k": 3},
        # a's twin, taking no traffic: pinned only, for the A/A comparison.
        {"name": "c", "version": 1, "weight": 0, "answer_mode": "extractive"},
    ],
}


@dataclass
class RecordsRedis:
    """A redis-server of the tests' own, with append-only persistence, that tests restart."""

    port: int
    data_dir: Path
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is needed"
        argv = [
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        self.child = Child("records-redis", argv, {}, None, self.data_dir / "redis.log")
        self.child.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("records Redis did not start")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()  # SIGTERM: Redis flushes its append-only file and exits

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@dataclass
class VariantSuite:
    gateway: str
    rag: str
    file: Path
    records: RecordsRedis
    collection: str

    def write(self, document: dict[str, Any]) -> None:
        staged = self.file.with_suffix(".tmp")
        staged.write_text(yaml.safe_dump(document, sort_keys=False))
        staged.replace(self.file)


@pytest.fixture(scope="module")
def variant_suite(
    suite: Suite,
    tmp_path_factory: pytest.TempPathFactory,
    ingest_settings: IngestSettings,
    examples_dir: Path,
) -> Iterator[VariantSuite]:
    root = tmp_path_factory.mktemp("variants")
    records = RecordsRedis(free_port(), root)
    records.start()
    file = root / "variants.yaml"
    file.write_text(yaml.safe_dump(FILE, sort_keys=False))
    collection = f"t_{uuid.uuid4().hex[:12]}"
    report = asyncio.run(ingest_path(examples_dir, collection, ingest_settings))
    assert report.failed == 0
    env = {
        k: v for k, v in suite.service_env().items() if k not in ("QUARRY_RAG_PORT", "QUARRY_GATEWAY_PORT")
    }
    env.update(
        {
            "QUARRY_RAG_VARIANTS_FILE": str(file),
            "QUARRY_RAG_VARIANTS_RELOAD_S": "0.5",
            "QUARRY_RAG_RECORDS_REDIS_URL": records.url,
        }
    )
    children = []
    try:
        rag, rag_url = start_service("rag", env, root / "rag.log")
        children.append(rag)
        gateway, gateway_url = start_service(
            "gateway", {**env, "QUARRY_GATEWAY_RAG_URL": rag_url}, root / "gw.log"
        )
        children.append(gateway)
        yield VariantSuite(gateway_url, rag_url, file, records, collection)
    finally:
        for child in reversed(children):
            child.stop()
        records.stop()


@pytest.fixture
async def client(variant_suite: VariantSuite) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=variant_suite.gateway, timeout=120) as c:
        yield c


async def _ask(client: httpx.AsyncClient, key: str, collection: str, **extra: object) -> httpx.Response:
    body = {"question": QUESTION, "collection": collection, **extra}
    return await client.post("/v1/query", json=body, headers=bearer(key))


async def _variants_of(
    client: httpx.AsyncClient, key: str, collection: str, users: list[str]
) -> dict[str, str]:
    """The variant that answered each user (eight at a time)."""
    gate = asyncio.Semaphore(8)

    async def one(user: str) -> tuple[str, str]:
        async with gate:
            response = await _ask(client, key, collection, user=user)
            assert response.status_code == 200, response.text
            return user, response.json()["variant"]

    return dict(await asyncio.gather(*(one(u) for u in users)))


async def test_traffic_splits_by_weight_and_each_user_stays_on_one_variant(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    key = await make_key({"query"}, rate_limit="100000/minute")
    users = [f"user-{i}" for i in range(2000)]
    first = await _variants_of(client, key, variant_suite.collection, users)
    counts = Counter(first.values())
    assert set(counts) == {"a@1", "b@1"}  # c takes no traffic
    assert abs(counts["b@1"] / len(users) - 0.10) <= 0.03, counts
    again = await _variants_of(client, key, variant_suite.collection, users)
    assert all(again[u] == first[u] for u in again)
    # No user field: the API key is who sticks.
    seen = {(await _ask(client, key, variant_suite.collection)).json()["variant"] for _ in range(5)}
    assert len(seen) == 1


async def test_a_pin_is_honoured_for_admin_keys_and_refused_for_query_keys(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    admin = await make_key({"query", "admin"})
    query_only = await make_key({"query"})
    pinned = await _ask(client, admin, variant_suite.collection, variant="b")
    assert pinned.status_code == 200 and pinned.json()["variant"] == "b@1"
    assert (await _ask(client, admin, variant_suite.collection, variant="c@1")).json()["variant"] == "c@1"
    refused = await _ask(client, query_only, variant_suite.collection, variant="b")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "variant_pin_forbidden"
    unknown = await _ask(client, admin, variant_suite.collection, variant="zz")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_variant"


async def test_cached_answers_never_cross_variants(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    admin = await make_key({"query", "admin"})
    question = f"What does the embedder do? {uuid.uuid4().hex[:6]}"
    order = ["a", "b", "a", "b", "c"]
    answers = [
        (
            await client.post(
                "/v1/query",
                json={"question": question, "collection": variant_suite.collection, "variant": v},
                headers=bearer(admin),
            )
        ).json()
        for v in order
    ]
    assert [a["variant"] for a in answers] == ["a@1", "b@1", "a@1", "b@1", "c@1"]
    assert [a["cached"] for a in answers] == [False, False, True, True, False]
    assert len({a["answer_id"] for a in answers}) == 5  # every answer served has its own id


async def _wait_for_record(records: RecordsRedis, answer_id: str, timeout_s: float = 15) -> dict[str, Any]:
    client = records.client()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                raw = client.get(f"quarry:record:{answer_id}")
            except redis.RedisError:
                raw = None
            if raw:
                return dict(json.loads(raw))
            await asyncio.sleep(0.1)
    finally:
        client.close()
    raise AssertionError(f"no record of {answer_id}")


def _quarry(*args: str) -> str:
    """The ``quarry`` CLI, as an operator runs it; its stdout."""
    quarry = str(Path(sys.executable).with_name("quarry"))
    return subprocess.run([quarry, *args], capture_output=True, text=True, check=True, timeout=60).stdout


async def _report(records: RecordsRedis, file: Path) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(
        _quarry,
        "variants",
        "report",
        "--redis-url",
        records.url,
        "--file",
        str(file),
        "--json",
    )
    return list(json.loads(out))


async def test_feedback_round_trips_for_the_answers_own_key_only(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    owner = await make_key({"query"})
    stranger = await make_key({"query"})
    answer = (await _ask(client, owner, variant_suite.collection, user="feedback-user")).json()
    assert answer["answer_id"].startswith("ans_")
    record = await _wait_for_record(variant_suite.records, answer["answer_id"])
    assert record["variant"] == answer["variant"] and record["question"] == QUESTION
    assert record["retrieved"] and "total" in record["timings_ms"]  # type: ignore[operator]

    before = {r["variant"]: r["rated"] for r in await _report(variant_suite.records, variant_suite.file)}
    body = {"answer_id": answer["answer_id"], "rating": "down", "comment": "wrong port", "sentence": 0}
    other = await client.post("/v1/feedback", json=body, headers=bearer(stranger))
    assert other.status_code == 404 and other.json()["error"]["code"] == "answer_not_found"
    given = await client.post("/v1/feedback", json=body, headers=bearer(owner))
    assert given.status_code == 200, given.text
    assert given.json()["variant"] == answer["variant"]
    bad = await client.post("/v1/feedback", json={**body, "rating": "meh"}, headers=bearer(owner))
    assert bad.status_code == 422
    after = {r["variant"]: r["rated"] for r in await _report(variant_suite.records, variant_suite.file)}
    assert after[answer["variant"]] == before.get(answer["variant"], 0) + 1


async def test_a_streamed_answer_carries_its_id_and_variant(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    key = await make_key({"query"})
    body = {"question": QUESTION, "collection": variant_suite.collection, "stream": True, "user": "streamer"}
    events: dict[str, dict[str, Any]] = {}
    async with client.stream("POST", "/v1/query", json=body, headers=bearer(key)) as response:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                events[event] = json.loads(line[len("data: ") :])
    done = events["done"]
    assert done["answer_id"].startswith("ans_") and done["variant"] in ("a@1", "b@1")
    await _wait_for_record(variant_suite.records, done["answer_id"])


async def _wait_for(predicate: object, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not met in time")


async def test_weights_change_without_a_restart_and_a_used_version_cannot_change(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    key = await make_key({"query"}, rate_limit="100000/minute")
    admin = await make_key({"admin"})
    users = [f"mover-{i}" for i in range(40)]
    try:
        await asyncio.to_thread(_quarry, "variants", "promote", "b", "--file", str(variant_suite.file))

        async def all_on_b() -> bool:
            return set((await _variants_of(client, key, variant_suite.collection, users)).values()) == {"b@1"}

        await _wait_for(all_on_b)
        listed = (await client.get("/v1/variants", headers=bearer(admin))).json()
        assert {v["id"]: v["share"] for v in listed["variants"]} == {"a@1": 0.0, "b@1": 1.0, "c@1": 0.0}

        # b@1 has taken traffic: a file changing its pipeline is refused whole, and the
        # weights rag had stay in force.
        changed = json.loads(json.dumps(FILE))
        changed["variants"][1]["top_k"] = 5
        variant_suite.write(changed)
        await asyncio.sleep(2)
        assert set((await _variants_of(client, key, variant_suite.collection, users)).values()) == {"b@1"}
        metrics = (await client.get(f"{variant_suite.rag}/metrics")).text
        assert 'quarry_rag_variant_reloads_total{result="rejected"}' in metrics
    finally:
        variant_suite.write(FILE)

    async def split_back() -> bool:
        return len(set((await _variants_of(client, key, variant_suite.collection, users)).values())) == 2

    await _wait_for(split_back)


async def test_acknowledged_records_survive_a_restart_of_their_redis(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    key = await make_key({"query"}, rate_limit="100000/minute")
    before = [
        (await _ask(client, key, variant_suite.collection, user=f"durable-{i}")).json() for i in range(10)
    ]
    for answer in before:
        await _wait_for_record(variant_suite.records, answer["answer_id"])

    variant_suite.records.stop()
    try:
        # Redis down: answers are still served, their records wait in rag, and feedback is
        # refused (not acknowledged), never lost.
        during = [(await _ask(client, key, variant_suite.collection, user=f"durable-{i}")) for i in range(5)]
        assert all(r.status_code == 200 for r in during)
        refused = await client.post(
            "/v1/feedback", json={"answer_id": before[0]["answer_id"], "rating": "up"}, headers=bearer(key)
        )
        assert refused.status_code == 503 and "feedback_unavailable" in refused.json()["error"]["message"]
        assert "retry-after" in refused.headers
    finally:
        variant_suite.records.start()

    for answer in before:
        await _wait_for_record(variant_suite.records, answer["answer_id"], timeout_s=2)
    for response in during:
        await _wait_for_record(variant_suite.records, response.json()["answer_id"], timeout_s=30)


async def test_the_report_finds_a_known_difference_and_no_difference_in_an_a_a_run(
    variant_suite: VariantSuite, client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    """Synthetic feedback with a known difference: a gets 80% thumbs up, b 35%, and c (a's
    twin) 78%. b must differ significantly from the control a; c must not."""
    admin = await make_key({"query", "admin"}, rate_limit="100000/minute")
    up_share = {"a": 0.80, "b": 0.35, "c": 0.78}
    per_variant = 100
    gate = asyncio.Semaphore(8)

    async def answer_and_rate(variant: str, i: int) -> None:
        async with gate:
            answer = (await _ask(client, admin, variant_suite.collection, variant=variant)).json()
            await _wait_for_record(variant_suite.records, answer["answer_id"])
            rating = "up" if i < up_share[variant] * per_variant else "down"
            given = await client.post(
                "/v1/feedback",
                json={"answer_id": answer["answer_id"], "rating": rating},
                headers=bearer(admin),
            )
            assert given.status_code == 200, given.text

    await asyncio.gather(*(answer_and_rate(v, i) for v in up_share for i in range(per_variant)))
    rows = {r["variant"]: r for r in await _report(variant_suite.records, variant_suite.file)}
    assert rows["a@1"]["control"] is True
    assert rows["b@1"]["vs_control"]["significant"] is True  # type: ignore[index]
    assert rows["c@1"]["vs_control"]["significant"] is False  # type: ignore[index]
    assert rows["c@1"]["rated"] >= per_variant  # type: ignore[operator]


async def test_quarry_eval_scores_a_variant_before_it_takes_traffic(
    variant_suite: VariantSuite, make_key: KeyFactory
) -> None:
    """c takes no traffic; `quarry eval --variant c` asks the QA set's test split pinned to it."""
    admin = await make_key({"query", "admin"}, rate_limit="100000/minute")
    qa = QA_SET
    records = variant_suite.records.client()
    try:
        before = records.zcard("quarry:records")
        out = await asyncio.to_thread(
            _quarry,
            "eval",
            "--answers",
            str(qa),
            "--split",
            "test",
            "--variant",
            "c",
            "--collection",
            variant_suite.collection,
            "--url",
            variant_suite.gateway,
            "--key",
            admin,
        )
        assert "in scope" in out and "c" in out
        asked = sum(1 for line in qa.read_text().splitlines() if json.loads(line)["split"] == "test")

        async def all_recorded() -> bool:
            return bool(records.zcard("quarry:records") - before >= asked)

        await _wait_for(all_recorded)
        found: list[bytes] = records.zrange("quarry:records", -asked, -1)  # type: ignore[assignment]
        newest = [i.decode() for i in found]
        variants = {json.loads(records.get(f"quarry:record:{i}") or b"{}").get("variant") for i in newest}
        assert variants == {"c@1"}
    finally:
        records.close()
