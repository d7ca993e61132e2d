"""QUARRY_<SVC>_METRICS_PORT: refused where it cannot work, unset when empty (pure settings logic;
the serving is tested on a real process in tests/integration/test_metrics_port.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.config import IngestSettings
from services.common.config import ServiceSettings
from services.embedder.config import EmbedderSettings
from services.gateway.config import GatewaySettings
from services.llm.config import LLMSettings
from services.rag.config import RagSettings


def test_metrics_stay_on_the_api_port_by_default() -> None:
    assert GatewaySettings().metrics_port is None


def test_a_metrics_port_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_GATEWAY_METRICS_PORT", "9090")
    assert GatewaySettings().metrics_port == 9090


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"port": 8100, "metrics_port": 8100}, "must differ from port"),
        ({"metrics_port": 9090, "workers": 2}, "needs workers=1"),
        ({"metrics_port": 0}, "greater than or equal to 1"),
    ],
)
def test_a_metrics_port_that_cannot_work_is_refused(settings: dict[str, int], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        GatewaySettings(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings_class",
    [GatewaySettings, RagSettings, EmbedderSettings, LLMSettings, IngestSettings],
    ids=lambda cls: cls.__name__,
)
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_metrics_port_means_unset(
    settings_class: type[ServiceSettings], empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    monkeypatch.setenv(f"{prefix}METRICS_PORT", empty)
    assert settings_class().metrics_port is None


@pytest.mark.parametrize("name", ["max_tokens_limit", "extract_subject_min_relevance", "variants_file"])
def test_rag_settings_documented_as_emptiable_accept_empty(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same type serves rag's other optional settings whose descriptions say "empty: ..."."""
    monkeypatch.setenv(f"QUARRY_RAG_{name.upper()}", "")
    assert getattr(RagSettings(), name) is None
