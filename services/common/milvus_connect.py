"""One way to open a Milvus client, and how to read the errors that mean "retry, do not give up"."""

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


NOT_LOADED_CODE = 101


def _causes(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and all(cause is not seen for seen in found):  # chains can loop
        found.append(cause)
        cause = cause.__cause__ or cause.__context__
    return found


def needs_load(exc: BaseException) -> bool:
    """Whether ``exc`` or one of its causes is Milvus' "collection not loaded" error.

    A restarted Milvus (Lite or standalone) comes back with collections released.
    """
    return any(getattr(cause, "code", None) == NOT_LOADED_CODE for cause in _causes(exc))


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means Milvus did not answer (down, restarting), not that it refused."""
    import grpc
    from pymilvus.exceptions import ConnectError, ConnectionNotExistException, MilvusUnavailableException

    for cause in _causes(exc):
        if isinstance(cause, ConnectError | ConnectionNotExistException | MilvusUnavailableException):
            return True
        if isinstance(cause, grpc.RpcError) and cause.code() in (  # type: ignore[attr-defined]
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return True
        if "Fail connecting to server" in str(cause):  # pymilvus' MilvusException(code=2)
            return True
    return False
