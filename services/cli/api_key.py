"""Which API key a CLI command uses: --key, then QUARRY_API_KEY, then the dev key `quarry up` saved."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

DEFAULT_DATA_DIR = Path(".quarry")
DEV_KEY_FILE = "dev-api-key"


def api_key(key: str | None, data_dir: Path = DEFAULT_DATA_DIR) -> str:
    if key:
        return key
    if os.environ.get("QUARRY_API_KEY"):
        return os.environ["QUARRY_API_KEY"]
    path = data_dir / DEV_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    Console().print("[red]No API key:[/red] pass --key, set QUARRY_API_KEY, or run `quarry up` first.")
    raise typer.Exit(2)
