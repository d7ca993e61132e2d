"""Rendering for console pages: one Jinja2 environment, autoescaped, with the viewer in context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC_DIR = Path(__file__).parent / "static"

# A page's own scripts and styles only: nothing inline, nothing from elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers["content-security-policy"] = _CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"  # pages show a key's data
    return response


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"
