"""Request ids and W3C trace context: what is accepted, what is replaced."""

from __future__ import annotations

import re

import pytest

from services.common.context import child_traceparent, clean_request_id

_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.mark.parametrize("value", ["abc", "req-1.2:3_x", "a" * 128])
def test_safe_request_ids_are_kept(value: str) -> None:
    assert clean_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "a" * 129, "bad id", "x\r\nSet-Cookie: a=b", "ünïcode", "a;b"])
def test_unsafe_request_ids_are_replaced(value: str | None) -> None:
    replaced = clean_request_id(value)
    assert replaced != value
    assert re.fullmatch(r"[0-9a-f]{24}", replaced)


def test_traceparent_continues_the_callers_trace_with_a_new_span() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    child = child_traceparent(incoming)
    assert _TRACEPARENT.match(child)
    assert child.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.split("-")[2] != "00f067aa0ba902b7"
    assert child.endswith("-01")


@pytest.mark.parametrize(
    "incoming", [None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "01-zz-yy-00"]
)
def test_invalid_traceparent_starts_a_new_trace(incoming: str | None) -> None:
    child = child_traceparent(incoming)
    assert _TRACEPARENT.match(child)
    assert child.split("-")[1] != "0" * 32
