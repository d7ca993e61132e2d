"""The README documents every setting each service reads (its table is generated)."""

from __future__ import annotations

from pathlib import Path

from services.cli.settings_doc import SETTINGS_CLASSES, env_names, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    start = text.index("<!-- settings:start -->") + len("<!-- settings:start -->")
    end = text.index("<!-- settings:end -->")
    assert text[start:end].strip() == settings_markdown().strip(), (
        "README settings table is stale: regenerate it with "
        "`python -m services.cli.settings_doc --write-readme`"
    )


def test_every_setting_has_a_prefixed_env_name() -> None:
    for cls in SETTINGS_CLASSES:
        for name in env_names(cls):
            assert name.startswith("QUARRY_"), name
