"""OpenAPI at /docs: every public route names the key scope it needs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.gateway.wire import component_schemas

SECURITY_SCHEME = "apiKey"

_DESCRIPTION = """The one public door of Quarry.

Send `Authorization: Bearer qk_<id>_<secret>`. Each key has scopes (`query`, `ingest`,
`admin`, `ops`), the collections it may use, a rate limit and an optional daily token quota.
Each operation lists the scope it needs under *security*. Errors are always
`{"error": {"code", "message", "request_id"}}`. Responses carry `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset`; a 429 also carries `Retry-After`.
"""


def scoped(scope: str, *alternatives: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that needs ``scope`` (or any of ``alternatives``)."""
    scopes = (scope, *alternatives)
    return {
        "security": [{SECURITY_SCHEME: [s]} for s in scopes],  # a list of requirements: any one of them
        "x-quarry-scope": " | ".join(scopes),
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=_DESCRIPTION, routes=app.routes
            )
            components = schema.setdefault("components", {})
            components["securitySchemes"] = {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "qk_<id>_<secret>"}
            }
            # Bodies the gateway relays unread: documented so clients and fuzzers see their shape.
            components.setdefault("schemas", {}).update(component_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
