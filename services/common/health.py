"""Liveness and readiness routes.

Live means the process answers. Ready means every dependency the service
itself needs answers now; each service passes its own checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises when the dependency is not usable; returns None when it is."""

_CHECK_TIMEOUT_S = 2.0


async def _run_check(check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means not ready; say which
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


def health_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
        report = dict(zip(names, results, strict=True))
        ok = all(r == "ok" for r in results)
        return JSONResponse(
            {"status": "ready" if ok else "unready", "checks": report},
            status_code=200 if ok else 503,
        )

    return router
