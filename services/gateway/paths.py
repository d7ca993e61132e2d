"""The upstream path of a forwarded request, rebuilt from the route's checked parameters.

The gateway matches and authorises a request on its decoded path parameters, so it sends on
exactly those: each one percent-encoded whole. Forwarding the decoded path would make a
document id's ``/``, ``?`` or ``%`` part of the URL's structure (``a%2Fb`` would become
``a/b``), and forwarding the raw path would let a URL library resolve its dot segments into a
path the gateway never checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from starlette.routing import compile_path


def path_format(route_path: str) -> str:
    """``/v1/x/{name:path}`` as ``/v1/x/{name}``, ready for :func:`upstream_path`."""
    _, formatted, _ = compile_path(route_path)
    return formatted


def upstream_path(formatted: str, params: Mapping[str, str]) -> str:
    """The route's path with each parameter as one encoded segment."""
    return formatted.format_map({name: _segment(value) for name, value in params.items()})


def _segment(value: str) -> str:
    quoted = quote(value, safe="")
    # "." and ".." alone are dot segments, which URL libraries resolve away (RFC 3986): a
    # document named ".." would address its collection instead.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
