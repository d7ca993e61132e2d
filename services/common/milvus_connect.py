"""One way to open a Milvus client, with keepalive settings every Milvus server accepts."""

from __future__ import annotations

from typing import Any

# pymilvus pings idle connections every 10 s; the Milvus Lite server (Python gRPC) allows two
# pings without data per 5 minutes and then answers GOAWAY "too_many_pings", breaking every
# later call on that shared channel. Pinging only while calls are in flight suits both Lite
# and a real Milvus (a dead idle connection is found, and re-dialled, at the next call).
_GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": False}


def connect_milvus(uri: str, token: str = "", timeout: float | None = None) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=timeout, grpc_options=_GRPC_OPTIONS)
