"""The HTTP submit API: `uvicorn api.app:app` (or `jobs api`).

Importing this module stays cheap and torch-free; the app itself is built on first access of `app`, so
that a server without API_TOKEN stops at start with a message saying what to set, instead of serving
without auth, while tests and tools may import the module freely.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse

from api.deps import ApiSettings, require_token
from api.models import ErrorView
from api.routes import experiments as experiment_routes
from api.routes import health as health_routes
from api.routes import jobs as job_routes
from api.routes import reports as report_routes
from jobs.service import BrokerUnavailable, ExperimentNotFound, InvalidRequest, JobNotFound
from jobs.settings import get_settings


def settings_from_environment() -> ApiSettings:
    """The API's part of the project settings (API_TOKEN, API_AUTH_DISABLED, MEDVL_VAR_DIR, JOBS_ARTIFACTS_DIR)."""
    settings = get_settings()
    return ApiSettings(
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
        auth_disabled=settings.api_auth_disabled,
        var_root=settings.resolved_var_dir(),
        artifacts_root=settings.artifacts_root,
    )


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": str(exc)})


def _broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The job row exists (FAILED, with this message); the client may retry once the broker is back.
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": str(exc)})


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # Same shape as FastAPI's own 422s; the service's message names the field and the fix.
    error = {"loc": ["body"], "msg": str(exc), "type": "invalid_request"}
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [error]})


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; raises AuthNotConfigured when neither a token nor API_AUTH_DISABLED=1 is set."""
    settings = settings or settings_from_environment()
    settings.check()
    app = FastAPI(
        title="medvl-peft jobs API",
        summary="Submit and follow LoRA/QLoRA fine-tuning and report-generation jobs.",
        version="0.1.0",
    )
    app.state.settings = settings
    unauthorized = {401: {"model": ErrorView, "description": "Missing or wrong bearer token."}}
    protected = APIRouter(dependencies=[Depends(require_token)], responses=unauthorized)
    protected.include_router(job_routes.router)
    protected.include_router(experiment_routes.router)
    protected.include_router(report_routes.router)
    app.include_router(protected)
    app.include_router(health_routes.router)  # unauthenticated: container healthchecks and load balancers call it
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(ExperimentNotFound, _not_found)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    app.add_exception_handler(InvalidRequest, _invalid_request)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `app` is built lazily (PEP 562) so that importing api.app in tests or tools never needs API_TOKEN.
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
