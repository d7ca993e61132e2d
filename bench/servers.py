"""Granian vs Hypercorn serving the same app over h2c, side by side in one run.

    .venv/bin/python -m bench.servers --seconds 8 --concurrency 50

Each server runs the same FastAPI app (with Quarry's middleware) in its own
process; one HTTP/2 connection carries `concurrency` concurrent streams, as a
pooled service-to-service client does. Two load generators: h2load (native, from
Debian's nghttp2-client, so the client is not the bottleneck) when installed,
and httpx (the client our services use). Prints req/s and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import h2load
from services.cli.suite import free_port

_SERVE = (
    "import sys; from services.common.config import ServiceSettings; "
    "from services.common.server import serve; "
    "serve('bench._echo_app:create_app', ServiceSettings(port=int(sys.argv[1])), sys.argv[2])"
)


async def _load(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], str]:
    latencies: list[float] = []
    async with httpx.AsyncClient(http1=False, http2=True, base_url=url, timeout=10) as client:
        version = (await client.post("/echo", json={"text": "warm"})).http_version
        for _ in range(200):  # warm-up
            await client.post("/echo", json={"text": "warm"})
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.post("/echo", json={"text": "hello"})
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, version


def _run_server(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(port), kind], env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health/live").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


def _h2load(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """req/s and mean latency (ms) from h2load, one connection, `concurrency` streams."""
    body = Path(__file__).with_name("_echo_body.json").read_bytes()
    run = h2load.run(
        f"{url}/echo",
        body=body,
        headers={"content-type": "application/json"},
        connections=1,
        streams=concurrency,
        requests=requests,
    )
    if run.failed or len(run.latencies_s) != requests:
        raise RuntimeError(f"h2load: {len(run.latencies_s)} of {requests} succeeded")
    return run.rps, statistics.mean(run.latencies_s) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternate servers this many times")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"granian": [], "hypercorn": []}
    native: dict[str, list[tuple[float, float]]] = {"granian": [], "hypercorn": []}
    versions: dict[str, str] = {}
    use_h2load = h2load.available()
    for _ in range(args.rounds):
        for kind in results:
            proc, url = _run_server(kind)
            try:
                count, lat, versions[kind] = asyncio.run(_load(url, args.seconds, args.concurrency))
                if use_h2load:
                    native[kind].append(_h2load(url, 20_000, args.concurrency))
            finally:
                proc.terminate()
                proc.wait()
            q = statistics.quantiles(lat, n=100)
            results[kind].append((count / args.seconds, q[49] * 1000, q[98] * 1000))
    print(
        f"\nh2c, {args.concurrency} concurrent streams on one connection, "
        f"{args.seconds:.0f} s x {args.rounds}\n"
    )
    print(f"{'server':<10} {'proto':<7} {'httpx req/s':>11} {'p50 ms':>8} {'p99 ms':>8}")
    summary = {}
    for kind, rows in results.items():
        rps = statistics.mean(r[0] for r in rows)
        p50 = statistics.mean(r[1] for r in rows)
        p99 = statistics.mean(r[2] for r in rows)
        summary[kind] = rps
        print(f"{kind:<10} {versions[kind]:<7} {rps:>11.0f} {p50:>8.2f} {p99:>8.2f}")
    print(f"granian / hypercorn throughput (httpx client): {summary['granian'] / summary['hypercorn']:.2f}x")
    if use_h2load:
        print(f"\n{'server':<10} {'h2load req/s':>13} {'mean ms':>8}")
        for kind, native_rows in native.items():
            rps = statistics.mean(r[0] for r in native_rows)
            summary[kind] = rps
            print(f"{kind:<10} {rps:>13.0f} {statistics.mean(r[1] for r in native_rows):>8.2f}")
        print(f"granian / hypercorn throughput (h2load): {summary['granian'] / summary['hypercorn']:.2f}x")
    else:
        print("(install nghttp2-client for the native h2load comparison)")


if __name__ == "__main__":
    main()
