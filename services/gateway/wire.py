"""What the gateway documents of rag's request bodies (``/v1/query``, ``/v1/search``).

The gateway relays these bodies' bytes and rag validates them; their JSON Schema is here for
the OpenAPI alone. Services never import each other's code, so ``rag_bodies.json`` is a copy
of rag's schemas, and ``tests/unit/test_gateway_wire.py`` fails (and says how to rewrite it)
when it no longer matches them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS_FILE = Path(__file__).with_name("rag_bodies.json")
QUERY_BODY = "QueryRequest"
SEARCH_BODY = "SearchRequest"


@cache
def component_schemas() -> dict[str, Any]:
    """The bodies and the schemas they refer to, as OpenAPI component schemas."""
    schemas: dict[str, Any] = json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))
    return schemas


def json_body(name: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body the route reads raw."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }
