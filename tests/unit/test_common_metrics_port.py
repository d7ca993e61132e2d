"""QUARRY_<SVC>_METRICS_PORT: refused where it cannot work (pure settings logic; the serving is
tested on a real process in tests/integration/test_metrics_port.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.config import GatewaySettings


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
