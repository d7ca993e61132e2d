"""Targeted hostile input against the live suite: broken bodies, deep nesting, oversized bodies,
Unicode tricks in filters and document ids, path traversal in sources, slow clients.

Every answer must be a 4xx with the JSON envelope (or a plain success where the input is
odd but legal), never a 5xx. Routes come from each service's OpenAPI, so new ones are covered.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.fuzz.hostile import (
    LONE_SURROGATES,
    MALFORMED_BODIES,
    ODD_BODIES,
    deeply_nested,
    json_post_routes,
    oversized,
    problem,
    wait_for_job,
)
from tests.fuzz.openapi_fuzz import envelope_problem

SERVICES = ("gateway", "rag", "embedder", "llm", "ingest")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def h2() -> Iterator[httpx.Client]:
    with httpx.Client(http1=False, http2=True, timeout=60.0) as client:
        yield client


@pytest.fixture
async def auth(make_key: KeyFactory) -> dict[str, str]:
    secret = await make_key(scopes={"query", "admin", "ingest"}, rate_limit="1000000/minute")
    return {"authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("service", SERVICES)
def test_malformed_and_odd_bodies_never_get_a_500(
    service: str, suite: Suite, h2: httpx.Client, auth: dict[str, str]
) -> None:
    base = suite.url(service)
    routes = json_post_routes(h2, base)
    assert routes, f"{service} publishes no JSON POST route"
    failures = []
    for route in routes:
        for name, body in MALFORMED_BODIES.items():
            r = h2.post(base + route, content=body, headers={**JSON, **auth})
            if (why := problem(r)) is not None:
                failures.append(f"{route} {name}: {why}")
    for name, body in ODD_BODIES.items():
        failures += [f"{name} {f}" for f in _post_everywhere(h2, base, body, auth)]
    assert not failures, "\n".join(failures)


def _post_everywhere(h2: httpx.Client, base: str, body: bytes, headers: dict[str, str]) -> list[str]:
    failures = []
    for route in json_post_routes(h2, base):
        r = h2.post(base + route, content=body, headers={**JSON, **headers})
        if r.status_code >= 500 or envelope_problem(r) is not None:
            failures.append(f"{route}: {r.status_code} {r.text[:200]}")
    return failures


@pytest.mark.parametrize(
    "service",
    [
        *(s for s in SERVICES if s != "embedder"),
        "embedder",
    ],
)
def test_lone_surrogates_never_get_a_500(
    service: str, suite: Suite, h2: httpx.Client, auth: dict[str, str]
) -> None:
    failures = _post_everywhere(h2, suite.url(service), LONE_SURROGATES, auth)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "service",
    SERVICES,
)
def test_deeply_nested_json_is_refused(
    service: str, suite: Suite, h2: httpx.Client, auth: dict[str, str]
) -> None:
    base = suite.url(service)
    failures = []
    for route in json_post_routes(h2, base):
        r = h2.post(base + route, content=deeply_nested(), headers={**JSON, **auth})
        if (why := problem(r)) is not None:
            failures.append(f"{route}: {why}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "service",
    [
        *(s for s in SERVICES if s != "embedder"),
        "embedder",
    ],
)
def test_oversized_bodies_are_refused(service: str, suite: Suite, auth: dict[str, str]) -> None:
    # HTTP/1.1 here: the gateway answers 413 before reading the body and resets the HTTP/2
    # stream, which httpx's HTTP/2 client reports as a local error instead of the answer.
    base = suite.url(service)
    with httpx.Client(timeout=120.0) as h1:
        failures = []
        for route in json_post_routes(h1, base):
            r = h1.post(base + route, content=oversized(4 << 20), headers={**JSON, **auth})
            if (why := problem(r)) is not None:
                failures.append(f"{route}: {why}")
            if service == "gateway" and r.status_code != 413:
                failures.append(f"{route}: gateway let a 4 MiB body past its 1 MiB cap ({r.status_code})")
    assert not failures, "\n".join(failures)


# Document ids a client may send: bidi override, zero width, NFC vs NFD, traversal, quotes, emoji.
TRICKY_IDS = [
    "plain-granite",
    "doc\u202eevil",
    "zero\u200bwidth",
    "caf\u00e9",
    "cafe\u0301",
    "../../etc/passwd",
    "quote\"and'back\\slash",
    "emoji-\U0001f469\u200d\U0001f469\u200d\U0001f467",
]
# Upload names that would escape a folder if anything ever joined them to a path; .txt so they load.
TRAVERSAL_NAMES = ["../../../../etc/passwd.txt", "..\\..\\windows\\win.txt", "%2e%2e/%2e%2e/etc/hosts.txt"]


@pytest.fixture(scope="module")
def hostile_collection(suite: Suite, h2: httpx.Client) -> Iterator[str]:
    """A real collection holding the tricky ids and uploads named like traversal paths."""
    ingest = suite.url("ingest")
    name = f"hostile_{uuid.uuid4().hex[:10]}"
    h2.post(f"{ingest}/v1/collections", json={"name": name}).raise_for_status()
    records = [
        {
            "_id": doc_id,
            "title": f"Rock {n}",
            "text": f"Sample {n} of granite and basalt, marker m{n}x.",
            "metadata": {"lang": "en\u200b" if n % 2 else "en"},
        }
        for n, doc_id in enumerate(TRICKY_IDS)
    ]
    job = h2.post(f"{ingest}/v1/collections/{name}/documents", json={"documents": records}).raise_for_status()
    done = wait_for_job(h2, ingest, job.json()["job_id"])
    assert done["state"] == "completed" and not done["errors"], done
    files = [
        ("files", (fname, b"Traversal probe about obsidian glass.", "text/plain"))
        for fname in TRAVERSAL_NAMES
    ]
    job = h2.post(f"{ingest}/v1/collections/{name}/documents", files=files).raise_for_status()
    done = wait_for_job(h2, ingest, job.json()["job_id"])
    assert done["state"] == "completed" and not done["errors"], done
    yield name
    h2.delete(f"{ingest}/v1/collections/{name}")


def _search(
    h2: httpx.Client, suite: Suite, collection: str, filters: Any, query: str = "granite"
) -> httpx.Response:
    body = {"query": query, "collection": collection, "top_k": 50, "filters": filters, "rerank": False}
    return h2.post(f"{suite.url('rag')}/v1/search", json=body)


def test_tricky_document_ids_round_trip_and_filter_exactly(
    suite: Suite, h2: httpx.Client, hostile_collection: str
) -> None:
    listed = h2.get(f"{suite.url('ingest')}/v1/collections/{hostile_collection}/documents").raise_for_status()
    ids = {d["doc_id"] for d in listed.json()["documents"]}
    assert set(TRICKY_IDS) <= ids  # stored byte for byte: no normalization, no stripping
    for doc_id in TRICKY_IDS:
        r = _search(h2, suite, hostile_collection, {"doc_id": {"eq": doc_id}})
        assert r.status_code == 200, (doc_id, r.text)
        hits = {h["doc_id"] for h in r.json()["hits"]}
        assert hits == {doc_id}, (doc_id, hits)  # NFC and NFD ids never match each other


@pytest.mark.parametrize(
    "filters",
    [
        {"doc_id": {"eq": 'x" or doc_id != "'}},
        {"doc_id": {"eq": "x' || 1==1 || '"}},
        {"doc_id": {"in": ['") or (1==1', "plain-granite\u0000"]}},
        {"doc_id\u0000": {"eq": "plain-granite"}},
        {"metadata.lang\u202e": {"eq": "en"}},
        {'metadata.a"] or true or ["': {"eq": 1}},
        {"metadata.lang": {"eq": "en\u200b\\"}},
        {"title": {"gte": "a"}},
    ],
)
def test_filter_tricks_never_widen_results(
    suite: Suite, h2: httpx.Client, hostile_collection: str, filters: dict[str, Any]
) -> None:
    r = _search(h2, suite, hostile_collection, filters)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert envelope_problem(r) is None, r.text
    else:  # an escaped literal that matches nothing; an injected `or` would return every chunk
        assert r.json()["hits"] == [], r.json()["hits"]


def test_lone_surrogate_query_on_a_real_collection_is_no_500(
    suite: Suite, h2: httpx.Client, hostile_collection: str
) -> None:
    # The collection exists, so the query reaches the embedder (an unknown one stops at 404).
    body = b'{"query": "granite \\ud800", "collection": "%s", "rerank": false}' % hostile_collection.encode()
    r = h2.post(f"{suite.url('rag')}/v1/search", content=body, headers=JSON)
    assert r.status_code < 500 or (envelope_problem(r) is None and r.status_code in (502, 503)), r.text


def test_traversal_names_are_labels_not_paths(
    suite: Suite, h2: httpx.Client, hostile_collection: str
) -> None:
    r = _search(h2, suite, hostile_collection, None, query="obsidian glass traversal probe")
    assert r.status_code == 200, r.text
    probes = [h for h in r.json()["hits"] if "obsidian" in h["text"]]
    assert {h["source"] for h in probes} == set(TRAVERSAL_NAMES)  # kept verbatim, as labels
    for hit in r.json()["hits"]:
        assert "root:" not in hit["text"] and "[fonts]" not in hit["text"]  # no file was read


def test_delete_by_traversal_id_removes_only_that_document(
    suite: Suite, h2: httpx.Client, hostile_collection: str
) -> None:
    ingest = f"{suite.url('ingest')}/v1/collections/{hostile_collection}/documents"
    r = h2.delete(f"{ingest}/{quote('../../etc/passwd', safe='')}")
    assert r.status_code == 200, r.text
    ids = {d["doc_id"] for d in h2.get(ingest).raise_for_status().json()["documents"]}
    assert "../../etc/passwd" not in ids
    assert set(TRICKY_IDS) - {"../../etc/passwd"} <= ids


def _slow_client(port: int, stop: threading.Event, connected: threading.Semaphore) -> None:
    """Headers promise 64 bytes of body, one byte at once, then one every 100 ms until told to stop."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /v1/search HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 64\r\n\r\n "
        )
        connected.release()
        for _ in range(60):  # bounded: at most 6 s of trickle
            if stop.wait(0.1):
                break
            try:
                s.sendall(b" ")
            except OSError:  # the server may cut a slow client off: that is allowed
                break


def test_slow_clients_do_not_starve_others(suite: Suite, h2: httpx.Client) -> None:
    stop = threading.Event()
    connected = threading.Semaphore(0)
    port = int(suite.url("rag").rsplit(":", 1)[1])
    threads = [threading.Thread(target=_slow_client, args=(port, stop, connected)) for _ in range(32)]
    for t in threads:
        t.start()
    try:
        # Every slow client holds an open request, half a body sent, before the others ask.
        assert all(connected.acquire(timeout=10) for _ in threads)
        answers = [
            h2.post(f"{suite.url('rag')}/v1/search", json={"query": "granite", "collection": "missing_c"})
            for _ in range(5)
        ]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert [a.status_code for a in answers] == [404] * 5, [a.text for a in answers]
