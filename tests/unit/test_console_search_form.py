"""The Search page's filter fields, as the /v1/search filters they become."""

from __future__ import annotations

import pytest

from services.console.search_form import FormError, metadata_value, search_filters


def test_only_filled_fields_make_conditions() -> None:
    assert search_filters("", " ", "", "") is None
    assert search_filters(" a.md ", "", "", "") == {"doc_id": {"eq": "a.md"}}
    assert search_filters("", "docs/a.md", "lang", "en") == {
        "source": {"eq": "docs/a.md"},
        "metadata.lang": {"eq": "en"},
    }


def test_a_metadata_filter_needs_both_halves() -> None:
    for key, value in (("lang", ""), ("", "en")):
        with pytest.raises(FormError):
            search_filters("", "", key, value)


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("2020", 2020),
        ("2.5", 2.5),
        ("true", True),
        ('"2020"', "2020"),
        ("en", "en"),
        ("NaN", "NaN"),
        ("null", "null"),
        ("[1]", "[1]"),
    ],
)
def test_metadata_values_keep_their_json_type(typed: str, value: object) -> None:
    assert metadata_value(typed) == value and type(metadata_value(typed)) is type(value)
