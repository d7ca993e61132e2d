"""What a command says when a service it talks to does not answer: one line on stderr, exit 1.

Every command that reaches the suite over the network (``ask``, ``eval --answers``,
``ingest``...) goes through here, so none of them ends in an httpx or pymilvus traceback and
all say it the same way.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlparse

import httpx
import typer

# As for any other failure of a command that ran (Redis down, a failed document); 2 is for a
# command refused before it ran (no API key, a folder over the cap).
EXIT_UNREACHABLE = 1
_HINT = "is the suite running? start it with `quarry up`"


def fail_unreachable(service: str, url: str, why: str = "") -> NoReturn:
    """Prints ``quarry: cannot reach SERVICE at URL ...`` on stderr and exits 1; ``service`` as
    the sentence names it ("the gateway", "Milvus")."""
    detail = f" ({why})" if why else ""
    print(f"quarry: cannot reach {service} at {url}{detail} — {_HINT}", file=sys.stderr)
    raise typer.Exit(EXIT_UNREACHABLE)


def fail_no_answer(service: str, url: str, exc: httpx.TransportError) -> NoReturn:
    """For a service that took the connection, then failed to answer (timed out, hung up)."""
    print(
        f"quarry: {service} at {url} did not answer ({type(exc).__name__}); see `quarry status` and its log",
        file=sys.stderr,
    )
    raise typer.Exit(EXIT_UNREACHABLE)


def fail_not_json(service: str, url: str, response: httpx.Response) -> NoReturn:
    """For an answer that is not JSON: another program on the port, or a proxy's error page."""
    kind = response.headers.get("content-type") or "no content type"
    print(
        f"quarry: {service} at {url} answered HTTP {response.status_code} with a body that is not JSON"
        f" ({kind}) — is another program listening on that port?",
        file=sys.stderr,
    )
    raise typer.Exit(EXIT_UNREACHABLE)


@contextmanager
def reaching(service: str, url: str) -> Iterator[None]:
    """Turns httpx's transport errors raised inside the block into that one line and exit 1."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout):
        fail_unreachable(service, url)
    except httpx.TransportError as exc:
        fail_no_answer(service, url, exc)


def not_listening(url: str, timeout_s: float = 2.0) -> str | None:
    """Why nothing accepts connections at ``url``'s host and port; None when something does.
    A URL without a host (a local file) is None too: there is nothing to dial."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    port = parsed.port or {"https": 443, "redis": 6379, "rediss": 6379}.get(parsed.scheme, 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__
