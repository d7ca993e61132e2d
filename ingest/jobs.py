"""Ingest job records in Redis: inputs, state, and one outcome per document.

A job may run more than once (a worker dies, the queue hands it to another), so
everything here is written to be repeated: outcomes are keyed by doc id, and an
``unchanged`` outcome never overwrites what an earlier attempt really did.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.indexer import STATUSES, DocOutcome, IngestReport

JobState = Literal["queued", "running", "completed", "failed"]

_PREFIX = "quarry:ingest:job:"
# Every job id, scored by its creation time: the list view reads it newest first.
_INDEX = "quarry:ingest:jobs"
# Most recent jobs a list looks through (filters apply within them): bounds one request's work.
LIST_WINDOW = 5000


_JOB_ID = re.compile(r"job_[0-9a-f]{24}")


def new_job_id() -> str:
    return f"job_{secrets.token_hex(12)}"


def valid_job_id(job_id: str) -> bool:
    """Only ids this module makes: another string could name one of a job's other keys
    (``job_x:results``) and be read as a job record."""
    return _JOB_ID.fullmatch(job_id) is not None


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
    def __init__(self, redis: Any, ttl_s: int, max_warnings: int = 200) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_warnings = max_warnings

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
            pipe.zadd(_INDEX, {job_id: time.time()})
            await pipe.execute()
        return job_id

    async def inputs(self, job_id: str) -> list[JobInput]:
        """The job's inputs; empty when they are gone (expired, or evicted by Redis)."""
        raw = await self._redis.lrange(self._keys(job_id)[1], 0, -1)
        return [_decoded(n, r) for n, r in enumerate(raw)]

    async def start_attempt(self, job_id: str) -> int:
        """Mark the job running; the number of this attempt."""
        meta = self._keys(job_id)[0]
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"state": "running", "started_at": now})
            pipe.hsetnx(meta, "first_started_at", now)  # the job's time limit counts from here
            pipe.hincrby(meta, "attempts", 1)
            *_, attempts = await pipe.execute()
        return int(attempts)

    async def first_started_at(self, job_id: str) -> float | None:
        """When the job's first attempt began (``time.time()``); None before any."""
        raw = await self._redis.hget(self._keys(job_id)[0], "first_started_at")
        return float(raw) if raw is not None else None

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
        """Keep up to ``max_warnings`` per job and count the rest: a file of a million bad
        lines must not make a job record of a million lines."""
        if not warnings:
            return
        meta, _, _, key = self._keys(job_id)
        room = max(self._max_warnings - await self._redis.llen(key), 0)
        async with self._redis.pipeline(transaction=True) as pipe:
            if room:
                pipe.rpush(key, *warnings[:room])
                pipe.ltrim(key, 0, self._max_warnings - 1)
                pipe.expire(key, self._ttl_s)
            if len(warnings) > room:
                pipe.hincrby(meta, "warnings_dropped", len(warnings) - room)
            await pipe.execute()

    async def finish(self, job_id: str, state: JobState, error: str = "") -> None:
        meta, inputs_key, _, _ = self._keys(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"state": state, "finished_at": time.time(), "error": error})
            pipe.delete(inputs_key)  # the documents are in Milvus now; free the memory
            await pipe.execute()

    async def get(self, job_id: str) -> JobView | None:
        if not valid_job_id(job_id):
            return None
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
        if self._max_warnings:
            kept = await self._redis.lrange(warnings_key, 0, self._max_warnings - 1)
            report.warnings = [w.decode() for w in kept]
        if dropped := int(fields.get("warnings_dropped", 0)):
            report.warnings.append(f"{dropped:,} more warnings were not kept (the cap per job)")
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

    async def list(
        self, collections: list[str] | None, state: str | None, offset: int, limit: int
    ) -> tuple[list[JobView], int]:
        """Jobs newest first, filtered by collection and state; the page and how many matched.

        Filters look at the ``LIST_WINDOW`` newest jobs only, so one request reads a bounded
        number of records however many jobs Redis keeps.
        """
        # Index entries outlive their expired records by at most the TTL: drop those first.
        await self._redis.zremrangebyscore(_INDEX, 0, time.time() - self._ttl_s)
        ids = [i.decode() for i in await self._redis.zrevrange(_INDEX, 0, LIST_WINDOW - 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._keys(job_id)[0], "collection", "state")
            rows = await pipe.execute() if ids else []
        wanted = set(collections) if collections is not None else None
        matched = [
            job_id
            for job_id, (collection, job_state) in zip(ids, rows, strict=True)
            if collection is not None
            and (wanted is None or collection.decode() in wanted)
            and (state is None or job_state.decode() == state)
        ]
        views = [await self.get(job_id) for job_id in matched[offset : offset + limit]]
        return [v for v in views if v is not None], len(matched)


def _decoded(number: int, raw: bytes) -> JobInput:
    try:
        return JobInput.from_json(raw)
    except (ValueError, KeyError, TypeError):
        # A damaged entry fails alone; the job's other inputs still run.
        return JobInput(f"input-{number}", error="the stored input is damaged and cannot be read")
