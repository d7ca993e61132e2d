"""The gateway documents rag's request bodies from its own copy; the copy must not drift.

``python -m tests.unit.test_gateway_wire`` rewrites the copy from rag's schemas.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from services.gateway.app import create_app
from services.gateway.wire import QUERY_BODY, SCHEMAS_FILE, SEARCH_BODY, component_schemas
from services.rag.schemas import QueryRequest, SearchRequest


def rag_schemas() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(QueryRequest, "validation"), (SearchRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = defs["$defs"]
    return schemas


def test_the_gateway_copy_of_the_body_schemas_is_rags() -> None:
    assert component_schemas() == rag_schemas(), "rewrite it: python -m tests.unit.test_gateway_wire"
    assert (QueryRequest.__name__, SearchRequest.__name__) == (QUERY_BODY, SEARCH_BODY)


def test_query_and_search_document_a_json_body() -> None:
    spec = create_app().openapi()
    for path, model in (("/v1/query", QUERY_BODY), ("/v1/search", SEARCH_BODY)):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert model in spec["components"]["schemas"]
    streamed = spec["paths"]["/v1/query"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= streamed.keys()


if __name__ == "__main__":
    SCHEMAS_FILE.write_text(json.dumps(rag_schemas(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
