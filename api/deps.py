"""Typed dependencies the routes declare: settings, the bearer-token check, a submission with checked paths."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.models import JobSubmission
from api.paths import PROJECT_ROOT, outside_roots, resolve, submission_paths


class AuthNotConfigured(RuntimeError):
    """Neither API_TOKEN nor API_AUTH_DISABLED=1 is set: the API refuses to start open by accident."""


@dataclass(frozen=True)
class ApiSettings:
    """What the HTTP layer needs to know; built once per app from the project's settings."""

    api_token: str | None
    auth_disabled: bool
    var_root: Path
    artifacts_root: Path

    def check(self) -> None:
        if not self.api_token and not self.auth_disabled:
            raise AuthNotConfigured(
                "the API needs a bearer token: set API_TOKEN (e.g. `openssl rand -hex 32`), "
                "or API_AUTH_DISABLED=1 for local use without auth"
            )

    @property
    def allowed_roots(self) -> tuple[Path, ...]:
        """Where paths in a request may point: the var root (data, models), the artifacts, the presets."""
        return (self.var_root, self.artifacts_root, PROJECT_ROOT / "configs")


def current_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


SettingsDep = Annotated[ApiSettings, Depends(current_settings)]

_bearer = HTTPBearer(auto_error=False, description="API_TOKEN, as `Authorization: Bearer <token>`.")


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries the configured token (constant-time comparison)."""
    if settings.auth_disabled:
        return
    token = credentials.credentials if credentials else ""
    if not (settings.api_token and secrets.compare_digest(token.encode(), settings.api_token.encode())):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token: send `Authorization: Bearer $API_TOKEN`",
            headers={"WWW-Authenticate": "Bearer"},
        )


def checked_submission(submission: JobSubmission, settings: SettingsDep) -> JobSubmission:
    """The request body, refused with a 422 naming the field when a path leaves the allowed roots."""
    errors = []
    for location, raw in submission_paths(submission).items():
        reason = outside_roots(raw, settings.allowed_roots, settings.var_root)
        if reason:
            errors.append({"loc": ("body", *location), "msg": reason, "type": "path_outside_roots", "input": raw})
    if errors:
        raise RequestValidationError(errors)
    if submission.config:
        # The service opens the config file in this process: open exactly the file that was checked,
        # whatever the working directory.
        return submission.model_copy(update={"config": str(resolve(submission.config, settings.var_root))})
    return submission


ValidSubmission = Annotated[JobSubmission, Depends(checked_submission)]
