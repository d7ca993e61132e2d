"""``quarry keys create|list|revoke``: manage API keys in Redis directly (no gateway needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import redis.asyncio as aioredis
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from services.cli.unreachable import fail_unreachable
from services.gateway.keys import SCOPES, ApiKey, KeyStore

T = TypeVar("T")

keys_app = typer.Typer(help="Manage API keys (talks to Redis directly).", no_args_is_help=True)
_console = Console()

RedisOption = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar=["QUARRY_REDIS_URL", "QUARRY_GATEWAY_REDIS_URL"],
        help="Redis holding the keys (the gateway's QUARRY_GATEWAY_REDIS_URL).",
    ),
]
_DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _with_store(redis_url: str, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def run() -> T:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return await action(KeyStore(client))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except RedisConnectionError as exc:
        fail_unreachable("Redis", redis_url, str(exc))
    except RedisError as exc:
        _console.print(f"[red]Redis at {redis_url} failed:[/red] {exc}")
        raise typer.Exit(1) from exc


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what holds the key.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"Repeatable: {', '.join(sorted(SCOPES))}.")
    ] = ["query"],  # noqa: B006 - typer reads the default, never mutates it
    collection: Annotated[
        list[str] | None, typer.Option("--collection", "-c", help="Repeatable; none means every collection.")
    ] = None,
    rate_limit: Annotated[str, typer.Option(help="For example 60/minute.")] = "60/minute",
    daily_tokens: Annotated[int | None, typer.Option(help="Daily token quota (none: unlimited).")] = None,
    redis_url: RedisOption = _DEFAULT_REDIS,
) -> None:
    """Create a key and print its secret (shown only this once)."""
    try:
        secret, key = _with_store(
            redis_url,
            lambda store: store.create(
                name, set(scope), set(collection) if collection else None, rate_limit, daily_tokens
            ),
        )
    except ValueError as exc:
        _console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _console.print(f"created key [bold]{key.key_id}[/bold] ({name}); its secret, shown only now:")
    # Plain print: the secret must survive copy-paste and pipes without markup or wrapping.
    print(secret)


@keys_app.command("list")
def list_keys(redis_url: RedisOption = _DEFAULT_REDIS) -> None:
    """List keys (never their secrets)."""
    keys: list[ApiKey] = _with_store(redis_url, lambda store: store.list())
    table = Table(title=f"API keys ({len(keys)})")
    for column in ("id", "name", "scopes", "collections", "rate limit", "daily tokens", "created", "state"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            key.name,
            ",".join(sorted(key.scopes)),
            "all" if key.collections is None else ",".join(sorted(key.collections)),
            key.rate_limit,
            "-" if key.daily_token_quota is None else str(key.daily_token_quota),
            datetime.fromtimestamp(key.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
            "[red]revoked[/red]" if key.revoked else "active",
        )
    _console.print(table)


@keys_app.command("revoke")
def revoke(key_id: str, redis_url: RedisOption = _DEFAULT_REDIS) -> None:
    """Revoke a key; every gateway replica refuses it from its next request."""
    if not _with_store(redis_url, lambda store: store.revoke(key_id)):
        _console.print(f"[red]no key with id {key_id!r}[/red]")
        raise typer.Exit(1)
    _console.print(f"revoked {key_id}")
