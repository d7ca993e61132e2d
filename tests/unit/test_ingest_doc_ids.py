"""What a document id may be; how a bad name is shown in a job's errors."""

from __future__ import annotations

import pytest

from ingest.doc_ids import InvalidDocId, check_doc_id, shown_name


@pytest.mark.parametrize(
    "doc_id", ["a", "a/b.md", "a%2Fb", "a b", "ü", "x" * 200, "ü" * 256, "\u200b zero-width"]
)
def test_ordinary_ids_pass_unchanged(doc_id: str) -> None:
    assert check_doc_id(doc_id) == doc_id
    assert shown_name(doc_id) == doc_id


def test_integers_become_their_decimal_form_and_booleans_are_refused() -> None:
    assert check_doc_id(42) == "42"
    with pytest.raises(InvalidDocId, match="not a boolean"):
        check_doc_id(True)
    with pytest.raises(InvalidDocId, match="not null"):
        check_doc_id(None)


def test_the_cap_is_a_setting_but_never_past_the_store() -> None:
    assert check_doc_id("abcd", max_chars=4) == "abcd"
    with pytest.raises(InvalidDocId, match="5 characters, over the cap of 4"):
        check_doc_id("abcde", max_chars=4)
    with pytest.raises(InvalidDocId, match="bytes in UTF-8"):
        check_doc_id("€" * 200, max_chars=512)  # 600 bytes


@pytest.mark.parametrize("char", ["\x00", "\n", "\r", "\t", "\x7f", "\x85"])
def test_control_characters_are_refused(char: str) -> None:
    with pytest.raises(InvalidDocId, match=f"U\\+{ord(char):04X}"):
        check_doc_id(f"a{char}b")


def test_a_bad_name_is_shown_escaped_and_cut() -> None:
    assert shown_name("a\x00b\nc\ud800") == "a\\u0000b\\u000ac\\ud800"
    shown = shown_name("\n" + "x" * 1000)
    assert shown.endswith("…") and len(shown) < 300
    shown.encode("utf-8")  # storable in Redis
