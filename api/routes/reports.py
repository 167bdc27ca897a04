"""The LoRA/QLoRA comparison reports: HTML for a browser, JSON for a program, chosen by the Accept header.

A report is what a `report` job wrote (its artifacts `html` and `json`); its id is that job's id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response, status
from fastapi.responses import FileResponse

from api.models import NOT_FOUND, JobState, JobView, ReportId
from jobs import service
from jobs.core.locations import data_roots
from jobs.core.storage import local_copy

router = APIRouter(prefix="/reports", tags=["reports"])

REPORT_STAGE = "report"


def prefers_html(accept: str | None) -> bool:
    """True when the client ranks text/html above application/json (a browser); JSON otherwise."""
    ranks = {"text/html": 0.0, "application/json": 0.0}
    for item in (accept or "").split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        quality = next((p.partition("=")[2] for p in parameters if p.startswith("q=")), "1")
        try:
            weight = float(quality)
        except ValueError:
            continue
        for name in ranks:
            if media in (name, name.split("/")[0] + "/*"):
                ranks[name] = max(ranks[name], weight)
    return ranks["text/html"] > ranks["application/json"]


def _report_file(job: JobView, kind: str) -> Path:
    if job.stage != REPORT_STAGE:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job.id} is a {job.stage} job, not a report")
    raw = job.artifacts.get(kind)
    if job.state != JobState.SUCCEEDED or not raw:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"report {job.id} has no {kind} yet (job is {job.state})")
    try:
        path = local_copy(raw).resolve()  # a report written on another host: downloaded from the bucket once
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"report {job.id}: {kind} file {raw} is not available") from None
    # The path comes from the database; serve it only from the folders this system writes.
    if not any(path.is_relative_to(root) for root in data_roots()) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"report {job.id}: {kind} file {raw} is not available")
    return path


def _serve(job: JobView, accept: str | None) -> Response:
    if prefers_html(accept):
        return FileResponse(_report_file(job, "html"), media_type="text/html")
    return FileResponse(_report_file(job, "json"), media_type="application/json")


# Both media types of a report, for the OpenAPI schema.
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: HTML when text/html is preferred, else JSON.",
        "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}},
    },
    **NOT_FOUND,
}
AcceptHeader = Annotated[str | None, Header(description="text/html for the page, application/json for the data.")]


@router.get("/latest", response_class=Response, responses=REPORT_RESPONSES)
def latest_report(accept: AcceptHeader = None) -> Response:
    """The newest finished report."""
    try:
        job = service.latest_report_job()
    except service.JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _serve(job, accept)


@router.get("/{report_id}", response_class=Response, responses=REPORT_RESPONSES)
def get_report(report_id: ReportId, accept: AcceptHeader = None) -> Response:
    """One report, by the id of the job that wrote it."""
    return _serve(service.get_job(report_id), accept)
