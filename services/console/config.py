"""Settings of the console the gateway mounts (``QUARRY_CONSOLE_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_CONSOLE_", extra="ignore", frozen=True)

    enabled: bool = Field(True, description="Mount the web console at /console on the gateway.")
    session_ttl_s: int = Field(
        8 * 3600, ge=60, description="A console session ends this long after sign-in (server-side)."
    )
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (true behind HTTPS; false for plain-HTTP dev)."
    )
