"""Liveness and readiness routes.

Live means the process answers. Ready means every dependency the service
itself needs answers now; each service passes its own checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.common.logs import get_logger

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises when the dependency is not usable; returns None when it is."""


class NotReady(Exception):
    """A check's own reason, safe to show ("model is loading"); other errors show their kind only."""


_CHECK_TIMEOUT_S = 2.0
_log = get_logger(__name__)


async def _run_check(name: str, check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
    except NotReady as exc:
        return f"error: {exc}"[:300]
    except Exception as exc:  # any failure means not ready; say which
        # The body names the failure's kind only: an error's text names internal hosts and ports,
        # and probes are reachable beyond the operators who read the log.
        _log.warning("readiness_check_failed", check=name, error=f"{type(exc).__name__}: {exc}"[:300])
        return f"error: {type(exc).__name__}"
    return "ok"


def health_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(n, checks[n]) for n in names))
        report = dict(zip(names, results, strict=True))
        ok = all(r == "ok" for r in results)
        return JSONResponse(
            {"status": "ready" if ok else "unready", "checks": report},
            status_code=200 if ok else 503,
        )

    return router
