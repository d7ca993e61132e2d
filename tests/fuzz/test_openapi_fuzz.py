"""Schemathesis against every service's live OpenAPI: no 5xx, no schema violation, always the envelope.

CI sends a moderate number of cases per service; ``make fuzz`` sets
``QUARRY_FUZZ_CASES=1000`` (see docs/reliability.md for the figures).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest
from schemathesis import Case

from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.fuzz.hostile import wait_for_job
from tests.fuzz.openapi_fuzz import Finding, fuzz_service

CASES = int(os.environ.get("QUARRY_FUZZ_CASES", "60"))
SEED = int(os.environ.get("QUARRY_FUZZ_SEED", "20240601"))
TIME_BUDGET_S = float(os.environ.get("QUARRY_FUZZ_TIME_BUDGET_S", "900"))

SERVICES = ("gateway", "rag", "embedder", "llm", "ingest")

# Enough tokens to exercise generation, few enough that a thousand cases finish on a CPU.
_MAX_TOKENS = 8


def bound_generation(case: Case[Any]) -> None:
    """Cap valid ``max_tokens``; an invalid value is the point of a negative case and stays."""
    body = case.body
    if not isinstance(body, dict) or not ({"messages", "question"} & body.keys()):
        return
    for name in ("max_tokens", "max_completion_tokens") if "messages" in body else ("max_tokens",):
        value = body.get(name)
        too_many = isinstance(value, int) and not isinstance(value, bool) and value > _MAX_TOKENS
        if name not in body or too_many:
            body[name] = _MAX_TOKENS


def known_finding(finding: Finding) -> str | None:
    """Findings already recorded (docs/reliability.md), tested on their own as strict xfails."""
    return None


@pytest.mark.parametrize("service", SERVICES)
async def test_generated_requests_get_no_500_and_match_the_schema(
    service: str, suite: Suite, make_key: KeyFactory
) -> None:
    headers: dict[str, str] = {}
    if service == "gateway":
        secret = await make_key(scopes={"query", "admin", "ingest"}, rate_limit="1000000/minute")
        headers["authorization"] = f"Bearer {secret}"
    report = await asyncio.to_thread(
        fuzz_service,
        service,
        suite.url(service),
        cases=CASES,
        headers=headers,
        edit=bound_generation,
        time_budget_s=TIME_BUDGET_S,
        fuzz_seed=SEED,
    )
    print(report.summary())
    assert report.cases >= CASES, report.summary()
    # Every answer was judged: 2xx for valid cases must exist, or the fuzzer only met the door.
    assert any(200 <= s < 300 for s in report.by_status), report.summary()
    known = [f for f in report.findings if known_finding(f)]
    print(f"known findings (see docs/reliability.md): {sorted({str(known_finding(f)) for f in known})}")
    new = [f for f in report.distinct_findings() if not known_finding(f)]
    assert not new, "\n".join(str(f) for f in new)


def test_streamed_answer_matches_the_documented_content_type(suite: Suite, collection_name: str) -> None:
    ingest, rag = suite.url("ingest"), suite.url("rag")
    with httpx.Client(http1=False, http2=True, timeout=120.0) as client:
        record = {"_id": "g1", "title": "Granite", "text": "Granite is an igneous rock rich in quartz."}
        job = client.post(
            f"{ingest}/v1/collections/{collection_name}/documents", json={"documents": [record]}
        )
        assert wait_for_job(client, ingest, job.raise_for_status().json()["job_id"])["state"] == "completed"
        spec = client.get(f"{rag}/openapi.json").json()
        documented = set(spec["paths"]["/v1/query"]["post"]["responses"]["200"]["content"])
        body = {
            "question": "What is granite?",
            "collection": collection_name,
            "stream": True,
            "max_tokens": 4,
        }
        with client.stream("POST", f"{rag}/v1/query", json=body) as r:
            assert r.status_code == 200, r.read()
            media = r.headers.get("content-type", "").split(";")[0]
        client.delete(f"{ingest}/v1/collections/{collection_name}")
    assert media in documented, (media, documented)
