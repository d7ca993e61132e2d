"""What verified answers cost, through the gateway at one client, side by side with a baseline.

For every in-scope question of the QA set, in turn (the order of targets alternates):
- this suite's ``/v1/search`` (hybrid, top 4), and ``/v1/query`` with ``answer_mode`` extractive:
  the extractive answer's added time is the per-question difference;
- this suite's ``/v1/query`` with ``answer_mode`` generate (generated, then verified), and the
  baseline's ``/v1/query`` (generated, unverified): the ratio is per question;
- the time to the first ``token`` event of a streamed answer on both.

Every answer is uncached: each suite starts on a fresh collection. The baseline is a checkout
of another commit (``--baseline-checkout``): this script starts its suite on free ports from
that folder, so its own code runs, with its own Redis database, collection and key.

Usage: python -m bench.answer_latency --baseline-checkout /tmp/quarry-main [--qa FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.cli.answer_eval import load_qa

ROOT = Path(__file__).resolve().parent.parent
# Streamed answers are asked with a token budget one below the default, so that they are not
# the cached answers of the same question just asked.
_STREAMED = {"max_tokens": 191}
QA = ROOT / "examples" / "qa" / "docs_qa.jsonl"

# Run inside a checkout: start its suite on free ports, ingest the examples, make a key,
# print where to reach it, and keep it up until stdin closes.
_LAUNCHER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from ingest.config import IngestSettings
    from ingest.runner import ingest_path
    from services.cli.suite import Ports, Suite
    from services.gateway.keys import KeyStore
    import redis.asyncio as aioredis

    data, redis_url, collection = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    suite = Suite(data_dir=data, redis_url=redis_url, ports=Ports.free())
    suite.start()
    settings = IngestSettings(
        milvus_uri=suite.milvus_uri, redis_url=redis_url, embedder_url=suite.url("embedder")
    )

    async def prepare():
        await ingest_path(Path("examples/docs"), collection, settings)
        client = aioredis.Redis.from_url(redis_url)
        key = (await KeyStore(client).create("bench", {"query"}, None, "100000/minute"))[0]
        await client.aclose()
        return key

    key = asyncio.run(prepare())
    print(json.dumps({"url": suite.url("gateway"), "key": key}), flush=True)
    try:
        sys.stdin.read()
    finally:
        suite.stop()
    """
)


@contextmanager
def suite_from(checkout: Path, redis_url: str, collection: str) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as data:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, data, redis_url, collection],
            cwd=checkout,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"the suite in {checkout} did not start")
            yield json.loads(line)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=120)


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def p(self, pct: int) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    if payload.get("cached"):
        raise RuntimeError(f"{path} answered from cache: the run must start on a fresh collection")
    return payload, elapsed


def _first_token_ms(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    first: float | None = None
    with client.stream("POST", "/v1/query", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():  # read to the end: the answer is then cached as usual
            if first is None and line.startswith("event: token"):
                first = (time.perf_counter() - started) * 1000
    return first if first is not None else (time.perf_counter() - started) * 1000


def _client(target: dict[str, str]) -> httpx.Client:
    headers = {"authorization": f"Bearer {target['key']}"}
    return httpx.Client(base_url=target["url"], headers=headers, timeout=300)


def run(new: dict[str, str], base: dict[str, str], questions: list[str], collection: str) -> None:
    series = {name: Series() for name in ("search", "extractive", "added", "generate", "baseline", "ratio")}
    ttft = {"new": Series(), "baseline": Series()}
    with _client(new) as ours, _client(base) as theirs:
        for i, question in enumerate(questions):
            ask = {"question": question, "collection": collection}
            steps = ["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]
            for step in steps:
                if step == "ours":
                    _, search_ms = _post(
                        ours, "/v1/search", {"query": question, "collection": collection, "top_k": 4}
                    )
                    _, extract_ms = _post(ours, "/v1/query", {**ask, "answer_mode": "extractive"})
                    _, generate_ms = _post(ours, "/v1/query", {**ask, "answer_mode": "generate"})
                    ttft["new"].values.append(_first_token_ms(ours, {**ask, **_STREAMED}))
                else:
                    _, baseline_ms = _post(theirs, "/v1/query", ask)
                    ttft["baseline"].values.append(_first_token_ms(theirs, {**ask, **_STREAMED}))
            series["search"].values.append(search_ms)
            series["extractive"].values.append(extract_ms)
            series["added"].values.append(extract_ms - search_ms)
            series["generate"].values.append(generate_ms)
            series["baseline"].values.append(baseline_ms)
            series["ratio"].values.append(generate_ms / baseline_ms)
    print(f"{len(questions)} questions, one client, through the gateway (ms; ratio: per question)")
    print(f"{'measure':<46}{'p50':>10}{'p99':>10}")
    rows = [
        ("/v1/search (hybrid, top 4)", series["search"]),
        ("/v1/query extractive", series["extractive"]),
        ("  added to /v1/search", series["added"]),
        ("/v1/query generate, verified (this commit)", series["generate"]),
        ("/v1/query generate, unverified (baseline)", series["baseline"]),
        ("  ratio this / baseline", series["ratio"]),
        ("stream: first token, verified (this commit)", ttft["new"]),
        ("stream: first token, unverified (baseline)", ttft["baseline"]),
    ]
    for name, values in rows:
        fmt = "{:>10.2f}" if "ratio" in name else "{:>10.0f}"
        print(f"{name:<46}" + fmt.format(values.p(50)) + fmt.format(values.p(99)))
    print(f"median ratio: {statistics.median(series['ratio'].values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline-checkout", type=Path, required=True, help="A checkout of the baseline commit."
    )
    parser.add_argument("--qa", type=Path, default=QA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379", help="Redis server (databases 9 and 10)."
    )
    args = parser.parse_args()
    questions = [item.question for item in load_qa(args.qa) if item.in_scope][: args.limit]
    collection = f"bench_{uuid.uuid4().hex[:8]}"
    with (
        suite_from(ROOT, f"{args.redis}/9", collection) as new,
        suite_from(args.baseline_checkout, f"{args.redis}/10", collection) as base,
    ):
        run(new, base, questions, collection)


if __name__ == "__main__":
    main()
