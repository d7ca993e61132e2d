"""A tiny service app with the full common wiring, to compare HTTP/2 servers fairly."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from services.common.config import ServiceSettings
from services.common.wiring import wire_service


class _Echo(BaseModel):
    text: str


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: _Echo) -> dict[str, str]:
        return {"text": body.text}

    wire_service(app, service="bench", settings=ServiceSettings(log_level="warning"), readiness={})
    return app
