"""Schemathesis against every service's live OpenAPI: no 5xx, no schema violation, always the envelope.

CI sends a moderate number of cases per service; ``make fuzz`` sets
``QUARRY_FUZZ_CASES=1000`` (see docs/reliability.md for the figures).
"""

from __future__ import annotations

import asyncio
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from schemathesis import Case

from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.fuzz.hostile import wait_for_job
from tests.fuzz.openapi_fuzz import CaseJudge, Finding, FuzzReport, fuzz_service

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
        # 11.0 is an integer to pydantic, so floats are capped too
        too_many = isinstance(value, int | float) and not isinstance(value, bool) and value > _MAX_TOKENS
        if name not in body or too_many:
            body[name] = _MAX_TOKENS


def aimed_at(collection: str) -> Callable[[Case[Any]], None]:
    """Bounds generation, and points about three in four query and search bodies at ``collection``
    (which holds documents), so they reach retrieval and generation instead of a 404 or 403.
    Which ones is decided by the body itself, so a seed replays the same cases."""

    def edit(case: Case[Any]) -> None:
        bound_generation(case)
        body = case.body
        if not isinstance(body, dict) or not ({"question", "query"} & body.keys()):
            return
        if zlib.crc32(repr(sorted(body.items(), key=str)).encode()) % 4 != 0:
            body["collection"] = collection
            # These are to be answered: a generated pin names a variant that does not exist,
            # and a generated max_tokens is mostly over the LLM's cap (both 422).
            body.pop("variant", None)
            body.pop("max_tokens", None)

    return edit


def within_grant(collection: str) -> CaseJudge:
    """For a key with scope query on ``collection`` only: no 2xx anywhere else."""

    def judge(case: Case[Any], response: httpx.Response) -> str | None:
        if not 200 <= response.status_code < 300 or case.path.startswith("/health/"):
            return None
        if case.path not in ("/v1/query", "/v1/search"):
            return f"a query-only key got {response.status_code} from {case.method} {case.path}"
        asked = case.body.get("collection", "docs") if isinstance(case.body, dict) else None
        if asked != collection:
            return f"answered for collection {asked!r}, outside the key's grant ({collection!r})"
        return None

    return judge


@pytest.fixture(scope="module")
def fuzz_collection(suite: Suite) -> Iterator[str]:
    """A collection with a few documents, for the gateway's query and search bodies to reach."""
    name = f"fz_{uuid.uuid4().hex[:10]}"
    ingest = suite.url("ingest")
    texts = {
        "granite": "Granite is an igneous rock rich in quartz and feldspar.",
        "basalt": "Basalt is a dark volcanic rock that cools quickly.",
        "marble": "Marble forms when limestone is heated under pressure.",
    }
    records = [{"_id": k, "title": k.title(), "text": v} for k, v in texts.items()]
    with httpx.Client(http1=False, http2=True, timeout=120.0) as client:
        job = client.post(f"{ingest}/v1/collections/{name}/documents", json={"documents": records})
        assert wait_for_job(client, ingest, job.raise_for_status().json()["job_id"])["state"] == "completed"
        yield name
        client.delete(f"{ingest}/v1/collections/{name}")


def _assert_clean(report: FuzzReport) -> None:
    print(report.summary())
    for operation in ("POST /v1/query", "POST /v1/search"):
        if report.by_operation[operation]:
            print(f"  {operation}: {report.statuses_of(operation)}")
    assert report.cases >= CASES, report.summary()
    # Every answer was judged: 2xx for valid cases must exist, or the fuzzer only met the door.
    assert any(200 <= s < 300 for s in report.by_status), report.summary()
    known = [f for f in report.findings if known_finding(f)]
    print(f"known findings (see docs/reliability.md): {sorted({str(known_finding(f)) for f in known})}")
    new = [f for f in report.distinct_findings() if not known_finding(f)]
    assert not new, "\n".join(str(f) for f in new)


def known_finding(finding: Finding) -> str | None:
    """Findings already recorded (docs/reliability.md), tested on their own as strict xfails."""
    return None


@pytest.mark.parametrize("service", SERVICES)
async def test_generated_requests_get_no_500_and_match_the_schema(
    service: str, suite: Suite, make_key: KeyFactory, fuzz_collection: str
) -> None:
    headers: dict[str, str] = {}
    edit: Callable[[Case[Any]], None] = bound_generation
    if service == "gateway":
        secret = await make_key(scopes={"query", "admin", "ingest"}, rate_limit="1000000/minute")
        headers["authorization"] = f"Bearer {secret}"
        edit = aimed_at(fuzz_collection)
    report = await asyncio.to_thread(
        fuzz_service,
        service,
        suite.url(service),
        cases=CASES,
        headers=headers,
        edit=edit,
        time_budget_s=TIME_BUDGET_S,
        fuzz_seed=SEED,
    )
    _assert_clean(report)
    if service == "gateway":  # real bodies reached rag and were answered
        assert report.statuses_of("POST /v1/query").get(200), report.statuses_of("POST /v1/query")


async def test_a_restricted_key_gets_nothing_past_its_grant(
    suite: Suite, make_key: KeyFactory, fuzz_collection: str
) -> None:
    """Scope query on one collection: generated cases on every route get no 5xx, and a 2xx only
    from query or search on that collection (three in four bodies name it, the rest anything else)."""
    secret = await make_key(scopes={"query"}, collections={fuzz_collection}, rate_limit="1000000/minute")
    report = await asyncio.to_thread(
        fuzz_service,
        "gateway (restricted key)",
        suite.url("gateway"),
        cases=CASES,
        headers={"authorization": f"Bearer {secret}"},
        edit=aimed_at(fuzz_collection),
        judge=within_grant(fuzz_collection),
        time_budget_s=TIME_BUDGET_S,
        fuzz_seed=SEED + 1,
    )
    _assert_clean(report)
    assert report.statuses_of("POST /v1/query").get(200), report.statuses_of("POST /v1/query")
    assert report.by_status[403], report.summary()


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
