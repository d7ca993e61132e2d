"""Ingest job records in Redis: inputs, state, and one outcome per document.

A job may run more than once (a worker dies, the queue hands it to another), so
everything here is written to be repeated: outcomes are keyed by doc id, and an
``unchanged`` outcome never overwrites what an earlier attempt really did.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.indexer import STATUSES, DocOutcome, IngestReport

JobState = Literal["queued", "running", "completed", "failed"]

_PREFIX = "quarry:ingest:job:"


def new_job_id() -> str:
    return f"job_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class JobInput:
    """One uploaded file (its bytes) or one JSON record."""

    name: str
    data: bytes = b""
    record: dict[str, Any] | None = None
    error: str = ""  # refused on arrival (too big...): fails alone when the job runs

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "data": base64.b64encode(self.data).decode(),
                "record": self.record,
                "error": self.error,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobInput:
        obj = json.loads(raw)
        return cls(obj["name"], base64.b64decode(obj["data"]), obj["record"], obj["error"])


@dataclass
class JobView:
    job_id: str
    collection: str
    state: JobState
    inputs: int
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str
    report: IngestReport = field(default_factory=IngestReport)


class JobStore:
    def __init__(self, redis: Any, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def _keys(job_id: str) -> tuple[str, str, str, str]:
        base = _PREFIX + job_id
        return base, f"{base}:inputs", f"{base}:results", f"{base}:warnings"

    async def create(self, collection: str, inputs: list[JobInput]) -> str:
        job_id = new_job_id()
        meta, inputs_key, _, _ = self._keys(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                meta,
                mapping={
                    "collection": collection,
                    "state": "queued",
                    "inputs": len(inputs),
                    "attempts": 0,
                    "created_at": time.time(),
                    "error": "",
                },
            )
            if inputs:
                pipe.rpush(inputs_key, *(i.to_json() for i in inputs))
            # Unfinished jobs expire too, so an abandoned queue cannot fill Redis for ever.
            pipe.expire(meta, self._ttl_s)
            pipe.expire(inputs_key, self._ttl_s)
            await pipe.execute()
        return job_id

    async def inputs(self, job_id: str) -> Iterator[JobInput]:
        raw = await self._redis.lrange(self._keys(job_id)[1], 0, -1)
        return (JobInput.from_json(r) for r in raw)

    async def start_attempt(self, job_id: str) -> int:
        """Mark the job running; the number of this attempt."""
        meta = self._keys(job_id)[0]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"state": "running", "started_at": time.time()})
            pipe.hincrby(meta, "attempts", 1)
            _, attempts = await pipe.execute()
        return int(attempts)

    async def record(self, job_id: str, outcomes: dict[str, DocOutcome]) -> None:
        results = self._keys(job_id)[2]
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc_id, outcome in outcomes.items():
                value = json.dumps([outcome.status, outcome.chunks, outcome.error])
                if outcome.status == "unchanged":
                    pipe.hsetnx(results, doc_id, value)  # a re-run must not hide an earlier add
                else:
                    pipe.hset(results, doc_id, value)
            pipe.expire(results, self._ttl_s)
            await pipe.execute()

    async def warn(self, job_id: str, warnings: list[str]) -> None:
        if warnings:
            key = self._keys(job_id)[3]
            await self._redis.rpush(key, *warnings)
            await self._redis.expire(key, self._ttl_s)

    async def finish(self, job_id: str, state: JobState, error: str = "") -> None:
        meta, inputs_key, _, _ = self._keys(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"state": state, "finished_at": time.time(), "error": error})
            pipe.delete(inputs_key)  # the documents are in Milvus now; free the memory
            await pipe.execute()

    async def get(self, job_id: str) -> JobView | None:
        meta, _, results, warnings_key = self._keys(job_id)
        raw = await self._redis.hgetall(meta)
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        report = IngestReport()
        for doc_id, value in (await self._redis.hgetall(results)).items():
            status, chunks, error = json.loads(value)
            if status in STATUSES:
                report.record(doc_id.decode(), DocOutcome(status, chunks, error))
        report.warnings = [w.decode() for w in await self._redis.lrange(warnings_key, 0, 199)]
        started, finished = fields.get("started_at"), fields.get("finished_at")
        return JobView(
            job_id=job_id,
            collection=fields["collection"],
            state=fields["state"],  # type: ignore[arg-type]
            inputs=int(fields["inputs"]),
            attempts=int(fields["attempts"]),
            created_at=float(fields["created_at"]),
            started_at=float(started) if started else None,
            finished_at=float(finished) if finished else None,
            error=fields.get("error", ""),
            report=report,
        )
