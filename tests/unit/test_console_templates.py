"""Every console template compiles, and pages escape what they show."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.console.pages_common import TEMPLATES

_DIR = Path(TEMPLATES.env.loader.searchpath[0])  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(p.name for p in _DIR.glob("*.html")))
def test_each_template_compiles(name: str) -> None:
    TEMPLATES.env.get_template(name)


def test_autoescaping_is_on() -> None:
    rendered = TEMPLATES.env.get_template("_hits.html").render(
        result=type("R", (), {"ok": False, "error": "<script>x</script>"})()
    )
    assert "<script>x" not in rendered and "&lt;script&gt;" in rendered
