"""Submit, list, inspect, follow and cancel jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from api.models import NOT_FOUND, ConflictView, ErrorView, JobId, JobState, JobSubmission, JobView
from jobs import service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses={
        400: {"model": ErrorView, "description": "The body is not JSON (FastAPI cannot decode it)."},
        409: {"model": ConflictView, "description": "The idempotency key was first used for another request."},
        503: {"model": ErrorView, "description": "The broker did not take the job; it is recorded FAILED."},
    },
)
def submit_job(submission: JobSubmission) -> JobView:
    """Record the job and enqueue it; a worker picks it up. The same request with the same idempotency key
    returns the first job; another request with that key is a 409 naming it."""
    try:
        return service.submit(submission.to_submit_request())
    except service.InvalidRequest as exc:
        location = ("body", *submission.location_of(exc.field))
        raise RequestValidationError([{"loc": location, "msg": str(exc), "type": "invalid_request"}]) from None


@router.get("", response_model=list[JobView])
def list_jobs(
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[JobView]:
    return service.list_jobs(state=state, limit=limit)


@router.get("/{job_id}", response_model=JobView, responses=NOT_FOUND)
def get_job(job_id: JobId) -> JobView:
    return service.get_job(job_id)


# Text for the log itself; errors stay JSON like everywhere else (hence Response, not PlainTextResponse, here).
LOG_RESPONSES = {200: {"description": "The job's log.", "content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.get("/{job_id}/logs", response_class=Response, responses={**LOG_RESPONSES, **NOT_FOUND})
def job_logs(
    job_id: JobId,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="Only the last N lines.")] = None,
) -> Response:
    return PlainTextResponse(service.read_logs(job_id, tail_lines=tail))


@router.post("/{job_id}/cancel", response_model=JobView, responses=NOT_FOUND)
def cancel_job(job_id: JobId) -> JobView:
    """A queued job is revoked; a running one stops at its next step, keeping the metrics recorded so far."""
    return service.cancel(job_id)


@router.post(
    "/{job_id}/publish",
    response_model=JobView,
    responses={
        **NOT_FOUND,
        503: {"model": ErrorView, "description": "The artifacts bucket or the broker is still away."},
    },
)
def publish_job(job_id: JobId) -> JobView:
    """A job whose run finished but whose files the bucket did not take ("publish pending") is queued again to
    upload them and record its result, without training again. Any other job is a 422."""
    return service.publish(job_id)
