"""The HTTP submit API: `uvicorn api.app:app` (or `jobs api`).

Importing this module stays cheap and torch-free; the app itself is built on first access of `app`, so
that a server without API_TOKEN stops at start with a message saying what to set, instead of serving
without auth, while tests and tools may import the module freely.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth import BearerTokenMiddleware, bearer_scheme
from api.deps import ApiSettings
from api.docs import add_offline_docs
from api.models import ErrorView
from api.routes import experiments as experiment_routes
from api.routes import health as health_routes
from api.routes import jobs as job_routes
from api.routes import reports as report_routes
from jobs.core.settings import get_settings
from jobs.core.text import printable
from jobs.service import (
    BrokerUnavailable,
    ExperimentNotFound,
    IdempotencyConflict,
    InvalidRequest,
    JobNotFound,
    StorageError,
)


def settings_from_environment() -> ApiSettings:
    """The API's part of the project settings (API_TOKEN, API_AUTH_DISABLED)."""
    settings = get_settings()
    return ApiSettings(
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
        auth_disabled=settings.api_auth_disabled,
    )


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": str(exc)})


def _broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The broker refused the job (its row exists, FAILED, with this message) or the artifacts bucket did (no
    # row): the client may retry once the server is back.
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": str(exc)})


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # Same shape as FastAPI's own 422s; the service's message names the field and the fix.
    error = {"loc": ["body"], "msg": str(exc), "type": "invalid_request"}
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [error]})


def _unprocessable(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own 422 echoes each bad input, and JSON cannot carry every input Python parsed: NaN,
    # Infinity (1e400), unpaired surrogates. Those are echoed as readable text instead of a 500.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": printable(errors)})


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    job_id = exc.job_id if isinstance(exc, IdempotencyConflict) else None
    return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(exc), "job_id": job_id})


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; raises AuthNotConfigured when neither a token nor API_AUTH_DISABLED=1 is set."""
    settings = settings or settings_from_environment()
    settings.check()
    app = FastAPI(
        title="medvl-peft jobs API",
        summary="Submit and follow LoRA/QLoRA fine-tuning and report-generation jobs.",
        version="0.1.0",
        docs_url=None,  # served by add_offline_docs, without CDNs
        redoc_url=None,
    )
    app.add_middleware(BearerTokenMiddleware, settings=settings)
    add_offline_docs(app)
    unauthorized = {401: {"model": ErrorView, "description": "Missing or wrong bearer token."}}
    protected = APIRouter(dependencies=[Depends(bearer_scheme)], responses=unauthorized)
    protected.include_router(job_routes.router)
    protected.include_router(experiment_routes.router)
    protected.include_router(report_routes.router)
    app.include_router(protected)
    app.include_router(health_routes.router)  # unauthenticated: container healthchecks and load balancers call it
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(ExperimentNotFound, _not_found)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    app.add_exception_handler(StorageError, _broker_unavailable)  # the artifacts bucket: the same 503
    app.add_exception_handler(InvalidRequest, _invalid_request)
    app.add_exception_handler(RequestValidationError, _unprocessable)
    app.add_exception_handler(IdempotencyConflict, _conflict)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `app` is built lazily (PEP 562) so that importing api.app in tests or tools never needs API_TOKEN.
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
