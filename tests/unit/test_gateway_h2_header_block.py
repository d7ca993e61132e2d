"""The gateway's HTTP/2 client encodes its own request headers: hpack must read them back."""

from __future__ import annotations

import hpack
import pytest

from services.gateway.h2_channel import _TABLE_SIZE_ZERO, _hpack_int, _literal


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b":method", b"POST"),
        (b":path", b"/v1/query?x=" + b"q" * 300),  # a length past the 7-bit prefix
        (b":authority", b"rag:8103"),
        (b"content-type", b"application/json"),  # static index 31: past the 4-bit prefix
        (b"content-length", b"0"),
        (b"x-request-id", b"a" * 24),
        (b"x-" + b"n" * 200, b""),  # a new name past the 7-bit prefix, an empty value
        (b"traceparent", "00-é".encode("latin-1")),
    ],
)
def test_a_literal_decodes_to_itself_and_leaves_the_table_empty(name: bytes, value: bytes) -> None:
    decoder = hpack.Decoder()
    block = _TABLE_SIZE_ZERO + _literal(name, value) + _literal(name, value)
    assert decoder.decode(block, raw=True) == [(name, value), (name, value)]
    assert len(decoder.header_table.dynamic_entries) == 0


@pytest.mark.parametrize("value", [0, 14, 15, 126, 127, 128, 300, 16_384, 2**21])
def test_integers_follow_rfc_7541(value: int) -> None:
    encoded = _hpack_int(value, 7)
    # Decoded by hand per RFC 7541 5.1.
    prefix = encoded[0] & 0x7F
    if prefix < 0x7F:
        assert (prefix, len(encoded)) == (value, 1)
        return
    decoded, shift = 0x7F, 0
    for byte in encoded[1:]:
        decoded += (byte & 0x7F) << shift
        shift += 7
    assert decoded == value and not encoded[-1] & 0x80


@pytest.mark.parametrize("bad", [b"a\r\nx-injected: 1", b"a\nb", b"a\x00b"])
def test_a_value_rfc_9113_calls_malformed_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        _literal(b"x-request-id", bad)
