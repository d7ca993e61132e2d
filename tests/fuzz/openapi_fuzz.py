"""Schemathesis cases from a live service's OpenAPI, sent over HTTP/2 and judged without stopping early.

Every operation the service publishes is fuzzed, so routes added later are picked up
with no change here. Each case is checked for a 5xx, for a body that breaks the
documented schema, and for an error that is not the JSON envelope; failures are
collected (not raised) so one run counts every case and reports every finding.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err

# Checks whose failure is a finding. status_code_conformance is left out on purpose:
# FastAPI documents only 200/422, while 401/404/409/413/429 are designed answers.
_CHECK_NAMES = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")

CaseEdit = Callable[[Case[Any]], None]
"""Bounds a generated case's cost (e.g. caps max_tokens) without narrowing its shape."""

CaseJudge = Callable[[Case[Any], httpx.Response], str | None]
"""A check of the caller's own on each answer (e.g. a grant that must hold); None: no problem."""


@dataclass
class Finding:
    operation: str
    status: int
    problem: str
    request: str

    def __str__(self) -> str:
        return f"{self.operation} -> {self.status}: {self.problem}\n    {self.request}"


@dataclass
class FuzzReport:
    service: str
    cases: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    by_operation_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items()))
        return f"{self.service}: {self.cases} cases, {len(self.findings)} findings; statuses {statuses}"

    def statuses_of(self, operation: str) -> dict[int, int]:
        """How ``operation`` ("POST /v1/query") was answered: count per status."""
        return {s: n for (op, s), n in sorted(self.by_operation_status.items()) if op == operation}

    def distinct_findings(self) -> list[Finding]:
        """One finding per (operation, status, first line of the problem)."""
        seen: dict[tuple[str, int, str], Finding] = {}
        for f in self.findings:
            seen.setdefault((f.operation, f.status, f.problem.splitlines()[0][:120]), f)
        return list(seen.values())


def _checks() -> list[CheckFunction]:
    from schemathesis import checks

    return [getattr(checks, name) for name in _CHECK_NAMES]


def envelope_problem(response: httpx.Response) -> str | None:
    """Why a 4xx/5xx answer is not ``{"error": {"code", "message", "request_id"}}``, or None."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"error answer is not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not {"code", "message", "request_id"} <= error.keys():
        return f"error answer is not the envelope: {str(body)[:200]}"
    return None


def _httpx_kwargs(case: Case[Any], base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """Schemathesis serializes for `requests`; map the few keys httpx spells differently."""
    kw = case.as_transport_kwargs(base_url=base_url, headers=headers)
    out: dict[str, Any] = {k: kw[k] for k in ("method", "url", "headers", "params", "cookies") if kw.get(k)}
    if "json" in kw:
        out["json"] = kw["json"]
    data = kw.get("data")
    if isinstance(data, bytes | str):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    if kw.get("files"):
        out["files"] = kw["files"]
    return out


def _describe(kwargs: dict[str, Any]) -> str:
    body = kwargs.get("json", kwargs.get("content", kwargs.get("data")))
    return f"{kwargs['method']} {kwargs['url']} params={kwargs.get('params')} body={str(body)[:300]}"


def operations(base_url: str, client: httpx.Client) -> Iterator[Any]:
    raw = client.get(f"{base_url}/openapi.json").raise_for_status().json()
    schema = schemathesis.openapi.from_dict(raw)
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # a route the schema cannot describe is itself a finding
            raise AssertionError(f"{base_url}: invalid OpenAPI operation: {result.err()}")
        yield result.ok()


def _has_input(op: Any) -> bool:
    return bool(op.body) or any(True for _ in op.iter_parameters())


def _share(total: int, n_with_input: int) -> int:
    """Operations with input share the budget evenly (those without get one case)."""
    return max(2, math.ceil(total / max(1, n_with_input)))


@dataclass
class _Run:
    """What every generated case of one service run shares."""

    base_url: str
    headers: dict[str, str]
    edit: CaseEdit | None
    judge: CaseJudge | None
    checks: list[CheckFunction]
    client: httpx.Client
    report: FuzzReport
    deadline: float


def fuzz_service(
    service: str,
    base_url: str,
    *,
    cases: int,
    headers: dict[str, str] | None = None,
    edit: CaseEdit | None = None,
    judge: CaseJudge | None = None,
    time_budget_s: float = 600.0,
    fuzz_seed: int = 20_240_601,
) -> FuzzReport:
    """Send about ``cases`` generated requests (half valid, half invalid) to every operation."""
    report = FuzzReport(service)
    with httpx.Client(http1=False, http2=True, timeout=60.0) as client:
        run = _Run(
            base_url, headers or {}, edit, judge, _checks(), client, report, time.monotonic() + time_budget_s
        )
        ops = list(operations(base_url, client))
        n_with_input = sum(1 for op in ops if _has_input(op))
        for op in ops:
            if not _has_input(op):
                _run_operation(run, op, GenerationMode.POSITIVE, 1, fuzz_seed)
        # Hypothesis stops early on small input spaces; further passes with new seeds fill the budget.
        for attempt in range(20):
            if report.cases >= cases or time.monotonic() > run.deadline:
                break
            for op in filter(_has_input, ops):
                per_op = _share(cases - report.cases, n_with_input)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    _run_operation(run, op, mode, per_op // 2, fuzz_seed + attempt)
    return report


def _run_operation(run: _Run, op: Any, mode: GenerationMode, examples: int, fuzz_seed: int) -> None:
    label = f"{op.method.upper()} {op.path}"

    @seed(fuzz_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # nothing is raised, so nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case: Case[Any]) -> None:
        if time.monotonic() > run.deadline:
            return
        if run.edit is not None:
            run.edit(case)
        kwargs = _httpx_kwargs(case, run.base_url, run.headers)
        try:
            response = run.client.request(**kwargs)
        except httpx.HTTPError as exc:  # a dropped stream is as bad as a 500
            run.report.findings.append(
                Finding(label, 0, f"transport error {type(exc).__name__}: {exc}", _describe(kwargs))
            )
            run.report.cases += 1
            return
        run.report.cases += 1
        run.report.by_status[response.status_code] += 1
        run.report.by_operation[label] += 1
        run.report.by_operation_status[label, response.status_code] += 1
        problems = [envelope_problem(response), run.judge(case, response) if run.judge else None]
        for problem in filter(None, problems):
            run.report.findings.append(Finding(label, response.status_code, problem, _describe(kwargs)))
        try:
            case.validate_response(response, checks=run.checks, headers=run.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                run.report.findings.append(
                    Finding(
                        label,
                        response.status_code,
                        str(failure.title) + ": " + str(failure.message)[:300],
                        _describe(kwargs),
                    )
                )

    with contextlib.suppress(Unsatisfiable):  # e.g. no invalid variant of an operation without input
        one()
