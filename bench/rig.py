"""A private suite for chaos, load and soak runs: its own Redis, ports, data, key and collection.

Redis runs with an fsync'd append-only file in the run's folder, as in production, so a
SIGKILL'd Redis comes back with its keys and queued jobs. It never touches the shared Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from services.cli.suite import Child, Ports, Suite, free_port
from services.gateway.keys import KeyStore

CHUNK_TOKENS, CHUNK_OVERLAP = 48, 8
_WORDS = (
    "granite",
    "basalt",
    "magma",
    "quartz",
    "feldspar",
    "mica",
    "crystal",
    "sediment",
    "erosion",
    "shale",
)


def records(tag: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "_id": f"{tag}-{i}",
            "title": f"Rock note {tag} {i}",
            "text": " ".join(f"{_WORDS[(i + j) % len(_WORDS)]} {tag} {i}-{j}." for j in range(60)),
        }
        for i in range(n)
    ]


@dataclass
class Rig:
    suite: Suite
    redis: Child
    key: str
    collection: str

    def redis_ready(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.suite.redis_url, socket_timeout=1).ping())
        except redis.RedisError:
            return False


def start_redis(folder: Path) -> Child:
    port = free_port()
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(folder),
    ]
    child = Child("redis", argv, {}, None, folder / "redis.log")
    child.start()
    client = redis.Redis(port=port)
    for _ in range(100):  # bounded: 10 s
        try:
            if client.ping():
                return child
        except redis.ConnectionError:
            time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")


async def _create_key(redis_url: str) -> str:
    client = aioredis.Redis.from_url(redis_url)
    try:
        secret, _ = await KeyStore(client).create(
            "reliability", {"query", "ingest", "admin"}, None, "1000000/minute"
        )
    finally:
        await client.aclose()
    return secret


def wait_for_job(
    client: httpx.Client, ingest_url: str, job_id: str, timeout_s: float = 180.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.get(f"{ingest_url}/v1/jobs/{job_id}")
        if r.status_code in (502, 503):  # a dependency is down: the job lives on, ask again
            time.sleep(0.5)
            continue
        job: dict[str, Any] = r.raise_for_status().json()
        if job["state"] in ("completed", "failed"):
            return job
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s}s")


def submit(client: httpx.Client, ingest_url: str, collection: str, docs: list[dict[str, Any]]) -> str:
    url = f"{ingest_url}/v1/collections/{collection}/documents"
    for _ in range(5):  # a 503 says "retry shortly" (F5 in docs/reliability.md), as a client would
        r = client.post(url, json={"documents": docs})
        if r.status_code not in (502, 503):
            break
        time.sleep(1.0)
    job_id: str = r.raise_for_status().json()["job_id"]
    return job_id


@contextmanager
def private_suite(
    folder: Path, extra_env: dict[str, str] | None = None, seed_docs: int = 20
) -> Iterator[Rig]:
    """Start everything, create a key and a seeded collection; stop everything after."""
    redis_child = start_redis(folder)
    suite = Suite(
        data_dir=folder,
        redis_url=f"redis://127.0.0.1:{redis_child.argv[2]}/0",
        ports=Ports.free(),
        extra_env=extra_env or {},
    )
    try:
        suite.start(timeout_s=300)
        rig = Rig(
            suite, redis_child, asyncio.run(_create_key(suite.redis_url)), f"rel_{uuid.uuid4().hex[:8]}"
        )
        ingest = suite.url("ingest")
        with httpx.Client(http1=False, http2=True, timeout=60.0) as client:
            body = {
                "name": rig.collection,
                "chunk_tokens": CHUNK_TOKENS,
                "chunk_overlap_tokens": CHUNK_OVERLAP,
            }
            client.post(f"{ingest}/v1/collections", json=body).raise_for_status()
            job = wait_for_job(
                client, ingest, submit(client, ingest, rig.collection, records("seed", seed_docs))
            )
            if job["state"] != "completed" or job["errors"]:
                raise RuntimeError(f"seeding failed: {job}")
        yield rig
    finally:
        suite.stop()
        redis_child.stop()
