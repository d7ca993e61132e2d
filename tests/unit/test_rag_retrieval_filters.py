"""Structured filters compile to escaped Milvus expressions; unsafe input is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.rag.retrieval.filters import FilterError, compile_filters
from services.rag.schemas import SearchFilters, SearchRequest


def test_string_fields_and_in_lists() -> None:
    expr = compile_filters({"doc_id": {"in": ["a.md", "b.md"]}, "source": {"ne": "x"}})
    assert expr == '(doc_id in ["a.md", "b.md"]) and (source != "x")'


def test_metadata_paths_numbers_and_booleans() -> None:
    expr = compile_filters({"metadata.year": {"gte": 2020, "lt": 2024.5}, "metadata.draft": {"eq": False}})
    assert (
        expr == '(metadata["year"] >= 2020) and (metadata["year"] < 2024.5) and (metadata["draft"] == false)'
    )


def test_metadata_in_becomes_equality_alternatives() -> None:
    # Milvus Lite rejects ``in`` on JSON paths.
    assert compile_filters({"metadata.lang": {"in": ["en", 3]}}) == (
        '((metadata["lang"] == "en" or metadata["lang"] == 3))'
    )


def test_no_filters_is_empty() -> None:
    assert compile_filters(None) == ""
    assert compile_filters({}) == ""


@pytest.mark.parametrize(
    "value",
    ['x" or doc_id != "', "a\\", '\\") or (1 == 1', "é\u202e\uff02ʺ", "a` or `b"],
)
def test_hostile_strings_stay_inside_one_literal(value: str) -> None:
    expr = compile_filters({"doc_id": {"eq": value}})
    body = expr[len('(doc_id == "') : -len('")')]
    # Unescaping the literal gives back the value exactly: nothing leaked out of it.
    assert body.replace('\\"', '"').replace("\\\\", "\\") == value
    assert '"' not in body.replace('\\"', "")


@pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "tab\t", "\ud800", "sep\u2028"])
def test_unrepresentable_strings_are_refused(value: str) -> None:
    with pytest.raises(FilterError):
        compile_filters({"metadata.k": {"eq": value}})


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"text": {"eq": "x"}}, "cannot filter"),
        ({"doc_id) or (1": {"eq": "x"}}, "cannot filter"),
        ({'metadata.a"]': {"eq": "x"}}, "metadata key"),
        ({"metadata.": {"eq": "x"}}, "metadata key"),
        ({"doc_id": {"gt": 3}}, "numbers in metadata"),
        ({"metadata.n": {"gt": "3"}}, "numbers in metadata"),
        ({"metadata.n": {"gt": True}}, "numbers in metadata"),
        ({"doc_id": {"eq": 3}}, "string field"),
        ({"metadata.n": {"eq": float("nan")}}, "finite"),
        ({"metadata.n": {"eq": 2**60}}, "out of range"),
        ({"doc_id": {}}, "at least one"),
        ({"doc_id": {"like": "a%"}}, "unknown operator"),
        ({"doc_id": {"in": []}}, "list of 1"),
    ],
)
def test_invalid_filters_are_refused(filters: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filters(filters)


def test_wire_model_reports_bad_filters_as_validation_errors() -> None:
    with pytest.raises(ValidationError):
        SearchRequest.model_validate({"query": "q", "filters": {"secret_field": {"eq": "x"}}})
    with pytest.raises(ValidationError):  # unknown operator keys are rejected by the model itself
        SearchRequest.model_validate({"query": "q", "filters": {"doc_id": {"regex": ".*"}}})
    with pytest.raises(ValidationError):  # objects are not scalars
        SearchRequest.model_validate({"query": "q", "filters": {"doc_id": {"eq": {"$ne": 1}}}})


def test_wire_model_compiles_in_alias() -> None:
    filters = SearchFilters.model_validate({"doc_id": {"in": ["a"]}, "metadata.n": {"lte": 3}})
    assert filters.expression() == '(doc_id in ["a"]) and (metadata["n"] <= 3)'
