"""GET /v1/status: every service's readiness, as each service's own /health/ready reports it,
and a few live figures from its own /metrics (see suite_figures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx2
from prometheus_client import generate_latest

from services.gateway.suite_figures import FigureKeeper

# A status page must answer even when a service hangs: each probe has this long.
PROBE_TIMEOUT_S = 2.0


class StatusBoard:
    """Probes each named service's readiness; the gateway's own comes from ``own_ready``.

    Its client opens on first use; the app's lifespan closes it.
    """

    def __init__(self, services: Mapping[str, str], own_ready: Callable[[], Awaitable[None]]) -> None:
        self._services = {name: url.rstrip("/") for name, url in services.items() if url}
        self._own_ready = own_ready
        self.client = httpx2.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False)
        self._figures = FigureKeeper()

    def _read_figures(self, service: str, text: str) -> dict[str, Any]:
        try:
            return self._figures.update(service, text)
        except ValueError:  # not Prometheus text: a proxy's error page, say
            return {"error": "unparsable"}

    async def _own(self) -> dict[str, Any]:
        # The gateway's own registry, read in-process: the same text its /metrics serves.
        figures = self._read_figures("gateway", generate_latest().decode())
        try:
            await asyncio.wait_for(self._own_ready(), PROBE_TIMEOUT_S)
        except Exception as exc:  # the kind only: an error's text names internal hosts
            checks = {"redis": f"error: {type(exc).__name__}"}
            return {"status": "unready", "checks": checks, "figures": figures}
        return {"status": "ready", "checks": {"redis": "ok"}, "figures": figures}

    async def _scrape(self, name: str, url: str) -> dict[str, Any]:
        try:
            response = await self.client.get(f"{url}/metrics")
        except httpx2.HTTPError as exc:
            return {"error": type(exc).__name__}
        if response.status_code != 200:
            return {"error": f"http {response.status_code}"}
        return self._read_figures(name, response.text)

    async def _probe(self, name: str, url: str) -> dict[str, Any]:
        ready, figures = await asyncio.gather(self._ready(url), self._scrape(name, url))
        return {**ready, "figures": figures}

    async def _ready(self, url: str) -> dict[str, Any]:
        try:
            response = await self.client.get(f"{url}/health/ready")
        except httpx2.HTTPError as exc:
            return {"status": "unreachable", "checks": {}, "error": type(exc).__name__}
        try:
            body = response.json()
        except ValueError:  # not JSON: a proxy's error page, say
            body = {}
        checks = body.get("checks") if isinstance(body, dict) else None
        return {
            "status": "ready" if response.status_code == 200 else "unready",
            "checks": checks if isinstance(checks, dict) else {},
        }

    async def report(self) -> dict[str, Any]:
        names = list(self._services)
        probes = await asyncio.gather(self._own(), *(self._probe(n, self._services[n]) for n in names))
        services = dict(zip(["gateway", *names], probes, strict=True))
        ready = all(s["status"] == "ready" for s in services.values())
        return {"status": "ready" if ready else "degraded", "services": services}
