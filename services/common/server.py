"""Serve a service's ASGI app factory over HTTP/2 cleartext (and HTTP/1.1 on the same port).

Granian is the default (see docs/architecture.md); Hypercorn stays selectable for
platforms where Granian has no wheel.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from typing import Literal

from services.common.config import ServiceSettings

ServerKind = Literal["granian", "hypercorn"]

# Streams one client may keep open at once on one connection; rag fans out many.
_MAX_CONCURRENT_STREAMS = 1000


def serve(factory_target: str, settings: ServiceSettings, server: ServerKind = "granian") -> None:
    """Block serving ``module:factory`` (called with no arguments; it reads its settings)."""
    if server == "granian":
        _serve_granian(factory_target, settings)
    else:
        _serve_hypercorn(factory_target, settings)


def _serve_granian(factory_target: str, settings: ServiceSettings) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP2Settings

    Granian(
        target=factory_target,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        workers=settings.workers,
        http2_settings=HTTP2Settings(max_concurrent_streams=_MAX_CONCURRENT_STREAMS),
        log_enabled=False,
        backlog=2048,
    ).serve()


def _serve_hypercorn(factory_target: str, settings: ServiceSettings) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    module_name, _, attr = factory_target.partition(":")
    app = getattr(importlib.import_module(module_name), attr)()
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.h2_max_concurrent_streams = _MAX_CONCURRENT_STREAMS
    # Hypercorn's default GOAWAY after 1,000 requests per connection churns pooled clients.
    config.keep_alive_max_requests = 10_000_000
    config.accesslog = None
    config.errorlog = None

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(_main())
