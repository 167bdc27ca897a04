"""The API's settings, and its refusal to start open by accident."""

from __future__ import annotations

from dataclasses import dataclass


class AuthNotConfigured(RuntimeError):
    """Neither API_TOKEN nor API_AUTH_DISABLED=1 is set: the API refuses to start open by accident."""


@dataclass(frozen=True)
class ApiSettings:
    """What the HTTP layer needs to know; built once per app from the project's settings."""

    api_token: str | None
    auth_disabled: bool

    def check(self) -> None:
        if not self.api_token and not self.auth_disabled:
            raise AuthNotConfigured(
                "the API needs a bearer token: set API_TOKEN (e.g. `openssl rand -hex 32`), "
                "or API_AUTH_DISABLED=1 for local use without auth"
            )
