"""Renders every service's settings as a Markdown table (README's settings section)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from ingest.config import IngestSettings
from services.console.config import ConsoleSettings
from services.embedder.config import EmbedderSettings
from services.gateway.config import GatewaySettings
from services.llm.config import LLMSettings
from services.rag.config import RagSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    GatewaySettings,
    ConsoleSettings,
    RagSettings,
    EmbedderSettings,
    LLMSettings,
    IngestSettings,
)


def env_names(cls: type[BaseSettings]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper() for name in cls.model_fields]


def settings_markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in SETTINGS_CLASSES:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            default = field.default if field.default not in ("", None) else "—"
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(lines)


def write_readme(path: Path) -> None:
    text = path.read_text()
    start, end = "<!-- settings:start -->", "<!-- settings:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{settings_markdown()}\n{end}{tail}")


if __name__ == "__main__":
    if "--write-readme" in sys.argv:
        write_readme(Path(__file__).resolve().parents[2] / "README.md")
    else:
        print(settings_markdown())
