"""/metrics on a port of its own (QUARRY_<SVC>_METRICS_PORT, #27): a real service process serves
it there, over HTTP/1.1 (as Prometheus scrapes) and h2c, and no longer on its API port, so a
network policy that lets Prometheus reach only the metrics port keeps it off the API."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from services.cli.suite import Child, Suite, free_port

# module, env prefix, a gauge that only the service's before_scrape hook sets
_SERVICES = {
    "gateway": ("services.gateway", "QUARRY_GATEWAY_", None),
    "ingest": ("ingest.api", "QUARRY_INGEST_", "quarry_ingest_queue_depth "),
}


def _assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"] and error["request_id"], error


@pytest.mark.parametrize("service", sorted(_SERVICES))
async def test_metrics_are_served_on_their_own_port_and_not_the_api_port(
    suite: Suite, tmp_path: Path, service: str
) -> None:
    module, prefix, gauge = _SERVICES[service]
    api_port, metrics_port = free_port(), free_port()
    env = {**suite.service_env(), f"{prefix}PORT": str(api_port), f"{prefix}METRICS_PORT": str(metrics_port)}
    api = f"http://127.0.0.1:{api_port}"
    metrics = f"http://127.0.0.1:{metrics_port}"
    child = Child(service, [sys.executable, "-m", module], env, f"{api}/health/live", tmp_path / "log")
    child.start()
    try:
        child.wait_ready(time.monotonic() + 120)
        async with (
            httpx.AsyncClient(timeout=30) as h1,
            httpx.AsyncClient(http2=True, http1=False, timeout=30) as h2,
        ):
            assert (await h2.get(f"{api}/health/live")).status_code == 200
            _assert_not_found(await h2.get(f"{api}/metrics"))
            _assert_not_found(await h1.get(f"{api}/metrics"))
            for client in (h1, h2):
                scraped = await client.get(f"{metrics}/metrics")
                assert scraped.status_code == 200, scraped.text
                assert scraped.headers["content-type"].startswith("text/plain")
                # The API process's own registry: its requests on the API port are counted.
                counted = f'{{method="GET",route="/health/live",service="{service}",status="200"}}'
                assert f"quarry_http_requests_total{counted}" in scraped.text
                if gauge is not None:  # the hook that reads the queue ran for this scrape
                    (line,) = [ln for ln in scraped.text.splitlines() if ln.startswith(gauge)]
                    assert line.split()[1] != "NaN", line
            # The metrics port serves nothing else.
            for path in ("/health/live", "/v1/jobs", "/openapi.json", "/docs"):
                _assert_not_found(await h1.get(f"{metrics}{path}"))
    finally:
        child.stop()
    assert "metrics_server_died" not in child.log_path.read_text()
