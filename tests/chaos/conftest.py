"""A private suite for fault tests (bench.rig): its own Redis, never the shared one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bench.rig import Rig, private_suite, submit

# Production defaults, except: a dead worker's job is taken over within seconds, and the
# answer deadlines are long, so that a CPU-starved llm (slow, not down) is not reported as a fault.
CHAOS_ENV = {
    "QUARRY_INGEST_JOB_HEARTBEAT_S": "3",
    "QUARRY_INGEST_SWEEP_INTERVAL_S": "1",
    "QUARRY_INGEST_BATCH_DOCUMENTS": "8",
    "QUARRY_RAG_LLM_TIMEOUT_S": "240",
    "QUARRY_LLM_REQUEST_TIMEOUT_S": "240",
    "QUARRY_GATEWAY_REQUEST_TIMEOUT_S": "250",
}


@dataclass
class ChaosRig:
    rig: Rig
    h2: httpx.Client

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.rig.key}"}

    def submit(self, docs: list[dict[str, Any]]) -> str:
        return submit(self.h2, self.rig.suite.url("ingest"), self.rig.collection, docs)

    def job(self, job_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.h2.get(f"{self.rig.suite.url('ingest')}/v1/jobs/{job_id}").json()
        return view

    def query(self, client: httpx.Client, question: str) -> httpx.Response:
        body = {"question": question, "collection": self.rig.collection, "max_tokens": 8, "top_k": 2}
        return client.post(f"{self.rig.suite.url('gateway')}/v1/query", json=body, headers=self.auth)

    def search(self, client: httpx.Client, query: str) -> httpx.Response:
        body = {"query": query, "collection": self.rig.collection, "top_k": 5}
        return client.post(f"{self.rig.suite.url('rag')}/v1/search", json=body)

    def fully_served(self) -> bool:
        """An uncached answer with nothing degraded, a search, the ingest API, every service ready."""
        try:
            q = self.query(self.h2, f"What is granite made of? probe {uuid.uuid4().hex}")
            s = self.search(self.h2, "granite magma")
            c = self.h2.get(f"{self.rig.suite.url('ingest')}/v1/collections/{self.rig.collection}")
        except httpx.HTTPError:
            return False
        if q.status_code != 200 or q.json().get("degraded") or s.status_code != 200 or c.status_code != 200:
            return False
        return self.rig.redis_ready() and all(v == "ready" for v in self.rig.suite.status().values())


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosRig]:
    with (
        private_suite(tmp_path_factory.mktemp("chaos"), CHAOS_ENV) as rig,
        httpx.Client(http1=False, http2=True, timeout=httpx.Timeout(60.0, connect=2.0)) as h2,
    ):
        yield ChaosRig(rig, h2)
