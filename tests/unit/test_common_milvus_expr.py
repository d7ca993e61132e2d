"""Filter literals are escaped, never pasted."""

from __future__ import annotations

import pytest

from services.common.milvus_expr import field_equals, field_in, quote


def test_quote_escapes_quotes_and_backslashes() -> None:
    assert quote('a"b') == '"a\\"b"'
    assert quote("a\\b") == '"a\\\\b"'
    assert quote('x" or doc_id != "') == '"x\\" or doc_id != \\""'


def test_quote_rejects_nul() -> None:
    with pytest.raises(ValueError):
        quote("a\x00b")


def test_field_helpers() -> None:
    assert field_equals("doc_id", "a.md") == 'doc_id == "a.md"'
    assert field_in("chunk_id", ["a", 'b"']) == 'chunk_id in ["a", "b\\""]'
