"""Waiting on an ingest job, through the API or its record in Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ingest.jobs import JobStore, JobView


async def finished(api: httpx.AsyncClient, job_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """The job's status once it is completed or failed."""
    body: dict[str, Any] = {}
    for _ in range(int(timeout_s / 0.2)):
        body = (await api.get(f"/v1/jobs/{job_id}")).json()
        if body["state"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {body}")


async def record_finished(jobs: JobStore, job_id: str, timeout_s: float = 180.0) -> JobView:
    """The job's record once it is completed or failed."""
    view = None
    for _ in range(int(timeout_s / 0.2)):
        view = await jobs.get(job_id)
        assert view is not None
        if view.state in ("completed", "failed"):
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {view}")
