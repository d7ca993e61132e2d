"""Under steady load, SIGKILL one dependency, start it again, and check the suite healed by itself.

For each dependency this records what clients saw during the outage (statuses, error
codes, ``degraded``), how long until full service was back, and checks that an ingest job
running across the fault neither lost nor duplicated a chunk. Opt-in: ``make chaos``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.rig import CHUNK_OVERLAP, CHUNK_TOKENS, records, wait_for_job
from tests.chaos.chunks import chunk_problems, expected_chunk_ids
from tests.chaos.conftest import ChaosRig
from tests.chaos.load import Observations, SteadyLoad

# 40 s outage + up to 180 s recovery + a 300 s job: past the suite's default 600 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DEPENDENCIES = (
    "redis",
    "milvus",
    "embedder",
    "llm",
    "ingest-worker",
)
# How long the dependency stays dead while clients keep asking: about as long as an embedder
# restart takes here (model load); indexing waits out up to QUARRY_INGEST_DEPENDENCY_WAIT_S (300 s).
OUTAGE_S = 40.0
RECOVERY_LIMIT_S = 180.0
RESULTS = Path(os.environ.get("QUARRY_CHAOS_RESULTS", ".quarry/chaos-results.jsonl"))


def _wait(condition: Callable[[], bool], limit_s: float, every_s: float = 0.5) -> float | None:
    """Seconds until ``condition`` held (polled, bounded), or None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if condition():
            return time.monotonic() - start
        time.sleep(every_s)
    return None


def _kill(chaos: ChaosRig, dependency: str) -> None:
    rig = chaos.rig
    (rig.redis if dependency == "redis" else rig.suite.children[dependency]).kill()


def _restart(chaos: ChaosRig, dependency: str) -> None:
    rig = chaos.rig
    if dependency == "redis":
        rig.redis.start()
        assert _wait(rig.redis_ready, 30) is not None, "redis did not come back"
    else:
        rig.suite.restart(dependency)


def _requests(chaos: ChaosRig) -> dict[str, Callable[[httpx.Client, int], httpx.Response]]:
    return {
        # One query thread, cached and uncached in turn: one llm call in flight at most.
        "query": lambda c, n: chaos.query(
            c, "What is granite made of?" if n % 2 else f"Which rocks come from magma? {uuid.uuid4().hex[:6]}"
        ),
        "search": lambda c, n: chaos.search(c, f"basalt erosion {n % 7}"),
    }


@pytest.mark.parametrize("dependency", DEPENDENCIES)
def test_sigkill_and_restart_heals_without_restarting_anything_else(chaos: ChaosRig, dependency: str) -> None:
    rig = chaos.rig
    others = {n: c.process.pid for n, c in rig.suite.children.items() if n != dependency and c.process}
    docs = records(f"{dependency}-{uuid.uuid4().hex[:4]}", 40)
    with SteadyLoad(_requests(chaos)) as load:
        assert _wait(lambda: sum(s.status == 200 for s in load.observations.seen) >= 3, 120) is not None
        job_id = chaos.submit(docs)
        if dependency == "ingest-worker":  # land the kill mid-job
            _wait(lambda: chaos.job(job_id)["documents_done"] >= 8, 120, 0.1)
        killed_at = time.monotonic()
        _kill(chaos, dependency)
        time.sleep(OUTAGE_S)  # the outage itself: clients keep asking meanwhile
        restart_at = time.monotonic()
        _restart(chaos, dependency)
        ready_after = time.monotonic() - restart_at  # the process itself is up (models loaded)
        back_after = _wait(
            chaos.fully_served, RECOVERY_LIMIT_S, every_s=2.0
        )  # ...and the others use it again
        recovered_at = time.monotonic()
        time.sleep(2.0)  # a little steady traffic after recovery
    during = load.observations.between(killed_at, recovered_at)
    after = load.observations.between(recovered_at + 0.5, time.monotonic())
    job = wait_for_job(chaos.h2, rig.suite.url("ingest"), job_id, timeout_s=300)
    problems = chunk_problems(
        rig.suite.milvus_uri,
        rig.collection,
        expected_chunk_ids(docs, CHUNK_TOKENS, CHUNK_OVERLAP),
        {d["_id"] for d in docs},
    )
    result = {
        "dependency": dependency,
        "outage_s": OUTAGE_S,
        "restarted_process_ready_s": round(ready_after, 1),
        "full_service_after_ready_s": None if back_after is None else round(back_after, 1),
        "full_service_after_kill_s": None if back_after is None else round(recovered_at - killed_at, 1),
        "clients_saw_during": Observations.summary(during),
        "clients_saw_after": Observations.summary(after),
        "job": {"state": job["state"], "attempts": job["attempts"], "counts": job["counts"]},
        "chunk_problems": problems,
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")

    assert back_after is not None, f"no full service {RECOVERY_LIMIT_S}s after restarting {dependency}"
    pids_now = {n: c.process.pid for n, c in rig.suite.children.items() if n in others and c.process}
    assert pids_now == others  # nothing else was restarted
    seen = during + after
    assert not [s for s in seen if s.status == 0], "gateway/rag stopped answering: " + str(
        Observations.summary(seen)
    )
    assert not [s for s in seen if s.status >= 500 and s.status not in (502, 503, 504)], Observations.summary(
        seen
    )
    assert all(s.envelope_ok for s in seen), "an error answer was not the JSON envelope"
    assert not [s for s in after if s.status != 200], f"errors after recovery: {Observations.summary(after)}"
    assert job["state"] == "completed" and job["counts"]["failed"] == 0, job
    assert not problems, problems
