"""Locust users for the Quarry suite: a realistic mix over real HTTP/2 (h2c), loopback only.

Mix per user: cached questions (the same few, answered from rag's cache), uncached
questions, streamed answers, searches and, now and then, a small ingest job. Routes the
gateway does not serve yet are sent to the service that does (read from its OpenAPI).

Configured by ``bench/load.py`` through ``Targets``; importing this module imports
Locust, which monkey-patches the process with gevent.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

# isort: off
from locust import User, constant_throughput, task  # first: Locust patches sockets and ssl with gevent
from locust.env import Environment
import httpx
# isort: on

STOP_TIMEOUT_S = 120.0
CACHED_QUESTIONS = ("What is granite made of?", "How does basalt form?", "Why do glaciers erode valleys?")
_LOOPBACK = ("http://127.0.0.1:", "http://localhost:")


@dataclass
class Targets:
    gateway: str
    rag: str
    ingest: str
    key: str
    collection: str
    max_tokens: int = 16
    # Filled from the gateway's OpenAPI: routes it serves itself; the rest go to rag/ingest directly.
    gateway_routes: set[str] = field(default_factory=set)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for url in (self.gateway, self.rag, self.ingest):
            if not url.startswith(_LOOPBACK):
                raise ValueError(f"load goes to loopback only, not {url}")

    def discover(self) -> None:
        with httpx.Client(http1=False, http2=True, timeout=10.0) as client:
            spec = client.get(f"{self.gateway}/openapi.json").raise_for_status().json()
        self.gateway_routes = set(spec["paths"])


class QuarryUser(User):  # type: ignore[misc]  # locust's User is untyped (Any) to mypy here
    """One client: its own HTTP/2 connection, a bounded pace set by ``load.py``."""

    targets: ClassVar[Targets]
    wait_time = constant_throughput(1.0)  # replaced by load.py to hit a target rate
    _n = itertools.count()

    def on_start(self) -> None:
        self.client = httpx.Client(
            http1=False,
            http2=True,
            # Past the gateway's own 120 s deadline: a client-side timeout (status 0) means a hang.
            timeout=httpx.Timeout(130.0, connect=2.0),
            headers={"authorization": f"Bearer {self.targets.key}"},
        )

    def on_stop(self) -> None:
        self.client.close()

    def _call(self, name: str, method: str, url: str, *, stream: bool = False, **kw: Any) -> None:
        start = time.perf_counter()
        exc: Exception | None = None
        length, status = 0, 0
        try:
            if stream:
                with self.client.stream(method, url, **kw) as r:
                    for chunk in r.iter_bytes():
                        length += len(chunk)
                    status = r.status_code
            else:
                r = self.client.request(method, url, **kw)
                status, length = r.status_code, len(r.content)
            if status >= 400:
                exc = RuntimeError(f"HTTP {status}")
        except httpx.HTTPError as e:
            exc = e
        self.targets.statuses[(name, status)] += 1
        self.environment.events.request.fire(
            request_type=method,
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exc,
            context={"status": status},
        )

    def _query_url(self) -> str:
        return f"{self.targets.gateway}/v1/query"

    def _query(self, question: str, *, stream: bool = False) -> dict[str, Any]:
        t = self.targets
        return {
            "question": question,
            "collection": t.collection,
            "max_tokens": t.max_tokens,
            "stream": stream,
        }

    @task(4)
    def cached_query(self) -> None:
        q = CACHED_QUESTIONS[next(self._n) % len(CACHED_QUESTIONS)]
        self._call("query (cached)", "POST", self._query_url(), json=self._query(q))

    @task(2)
    def uncached_query(self) -> None:
        q = f"Which minerals are in sample {uuid.uuid4().hex[:8]}?"
        self._call("query (uncached)", "POST", self._query_url(), json=self._query(q))

    @task(1)
    def streamed_query(self) -> None:
        q = f"Explain rock sample {uuid.uuid4().hex[:8]}"
        self._call("query (stream)", "POST", self._query_url(), stream=True, json=self._query(q, stream=True))

    @task(4)
    def search(self) -> None:
        t = self.targets
        base = t.gateway if "/v1/search" in t.gateway_routes else t.rag
        body = {"query": f"basalt erosion {next(self._n) % 20}", "collection": t.collection, "top_k": 5}
        self._call("search", "POST", f"{base}/v1/search", json=body)

    @task(1)
    def ingest_job(self) -> None:
        t = self.targets
        route = "/v1/collections/{collection}/documents"
        base = t.gateway if route in t.gateway_routes else t.ingest
        n = uuid.uuid4().hex[:8]
        docs = [
            {"_id": f"load-{n}-{i}", "title": f"Load {n}", "text": f"Granite sample {n}-{i} with quartz."}
            for i in range(3)
        ]
        self._call(
            "ingest job", "POST", f"{base}/v1/collections/{t.collection}/documents", json={"documents": docs}
        )


def environment(targets: Targets, per_user_rps: float) -> Environment:
    targets.discover()
    user = type(
        "ConfiguredQuarryUser",
        (QuarryUser,),
        {
            "targets": targets,
            "wait_time": constant_throughput(per_user_rps),
        },
    )
    # At the end, requests in flight may finish (bounded) instead of being cut and lost from the stats.
    return Environment(user_classes=[user], stop_timeout=STOP_TIMEOUT_S)
