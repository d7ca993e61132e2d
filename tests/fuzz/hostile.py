"""Hostile request bodies and the helpers the targeted hostile-input tests share."""

from __future__ import annotations

import httpx

from bench.rig import wait_for_job
from tests.fuzz.openapi_fuzz import envelope_problem

__all__ = ["wait_for_job"]  # shared with the hostile-input tests

# Deeper than any JSON parser's default recursion limit (Python's is 1,000 frames).
DEPTH = 100_000

# Bodies no route may accept: each must get a 4xx with the envelope.
MALFORMED_BODIES: dict[str, bytes] = {
    "invalid_utf8": b'{"question": "\xff\xfe\xc3\x28", "query": "\xff", "input": "\xc0\xaf"}',
    "truncated": b'{"question": "unterminated',
    "not_an_object": b'["question", 1, null]',
    "empty": b"",
}

# Odd but well-formed bodies: any answer but a 5xx (an error must still be the envelope).
ODD_BODIES: dict[str, bytes] = {
    "huge_number": b'{"question": "q", "query": "q", "input": "q", "top_k": 1e400, "max_tokens": 1e999}',
    "duplicate_keys": b'{"question": "q", "question": {"$ne": 1}, "input": "q", "input": ["x"]}',
    "bidi_and_zero_width": (
        '{"question": "\u202e\u2066why\u200b?", "query": "\u202e", "input": "\ufeff"}'.encode()
    ),
}


def deeply_nested(depth: int = DEPTH) -> bytes:
    return b'{"question": ' + b"[" * depth + b"]" * depth + b"}"


def oversized(n_bytes: int) -> bytes:
    big = b'"' + b"a" * (n_bytes // 3) + b'"'
    return b'{"question": ' + big + b', "query": ' + big + b', "input": ' + big + b"}"


def json_post_routes(client: httpx.Client, base_url: str) -> list[str]:
    """POST routes of the service's OpenAPI that take a JSON body (new routes join by themselves)."""
    schema = client.get(f"{base_url}/openapi.json").raise_for_status().json()
    routes = []
    for path, item in schema["paths"].items():
        post = item.get("post")
        if post is None or "{" in path:
            continue
        content = post.get("requestBody", {}).get("content", {"application/json": {}})
        if "application/json" in content:
            routes.append(path)
    return routes


def problem(response: httpx.Response) -> str | None:
    """Why an answer to hostile input is wrong: a 5xx, a 2xx, or a 4xx without the envelope."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:200]}"
    if response.status_code < 400:
        return f"accepted with {response.status_code}: {response.text[:200]}"
    return envelope_problem(response)


# Legal JSON (RFC 8259 allows escaped lone surrogates) that no UTF-8 encoder can encode.
LONE_SURROGATES = b'{"question": "a\\u0000b\\ud800", "query": "\\udfff", "input": "\\u0000\\ud83d"}'
