"""What the worker's periodic sweep repairs besides stale RUNNING jobs (jobs/execution/claim.py): QUEUED jobs that no
message will ever run, and parent jobs whose children have all ended but that nothing settled.

A job's message can go missing between the row and the broker: a publish that failed after the row was
written, a chain step whose predecessor's worker died before it published the next step, a chord callback
lost with a crashed worker. The row is the source of truth, so the sweep compares the QUEUED rows with the
messages the broker holds and sends again what is missing. Claims are idempotent, so a message sent twice
runs the job once.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from db.models import Job, utcnow
from jobs.broker import queue
from jobs.core.database import transaction
from jobs.core.schemas import JobState
from jobs.core.settings import Settings, get_settings
from jobs.core.stages import Stage
from jobs.execution.claim import ORCHESTRATED, max_time_s

log = logging.getLogger(__name__)
FINISHED = [state.value for state in JobState if state.finished]


def runnable_since(job: Job, finished_at: dict[int, datetime | None]) -> datetime | None:
    """When the job could first run: its submission, or when the last job it waits for (request "after")
    ended. None while one of those is still to finish, or when the job declares nothing (see
    service.create_job)."""
    if "after" not in (job.request or {}):
        return None
    after = [int(job_id) for job_id in job.request["after"]]
    if any(job_id not in finished_at for job_id in after):
        return None
    ends = [finished_at[job_id] or job.submitted_at for job_id in after]
    return max([job.submitted_at, *ends])


def requeue_lost_jobs(settings: Settings | None = None) -> list[int]:
    """Send again every QUEUED job that has been runnable for JOBS_REQUEUE_AFTER_S and whose message the
    broker does not hold. Returns their ids."""
    settings = settings or get_settings()
    due = _due_queued_jobs(settings)
    if not due:
        return []
    pending = queue.pending_task_ids(reserved_after=time.time() - settings.requeue_after_s)
    requeued = []
    for job_id, stage, task_id, limit, gpu_class in due:
        if task_id in pending or not _still_queued(job_id):
            continue
        new_task_id = task_id or str(uuid.uuid4())
        # A lone message, without the canvas links the lost one had: the steps after it are sent by this
        # sweep in turn, once they become runnable.
        queue.enqueue(job_id, stage, new_task_id, limit, gpu_class)
        if task_id is None:
            _set_task_id(job_id, new_task_id)
        log.warning("job %s: queued but no message held it; sent again as task %s", job_id, new_task_id)
        requeued.append(job_id)
    return requeued


def _due_queued_jobs(settings: Settings) -> list[tuple[int, Stage, str | None, int, str | None]]:
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after_s)
    with transaction() as session:
        queued = session.scalars(
            select(Job).where(Job.state == JobState.QUEUED.value, Job.stage.not_in(ORCHESTRATED))
        ).all()
        waits_for = {int(i) for job in queued for i in (job.request or {}).get("after", [])}
        finished_at = dict(
            session.execute(select(Job.id, Job.finished_at).where(Job.id.in_(waits_for), Job.state.in_(FINISHED)))
            .tuples()
            .all()
        )
        due = []
        for job in queued:
            since = runnable_since(job, finished_at)
            if since is not None and since < cutoff:
                gpu_class = (job.request or {}).get("gpu_class")
                due.append((job.id, Stage(job.stage), job.celery_task_id, max_time_s(job.config), gpu_class))
    return due


def _still_queued(job_id: int) -> bool:
    with transaction() as session:
        return session.scalar(select(Job.state).where(Job.id == job_id)) == JobState.QUEUED.value


def _set_task_id(job_id: int, task_id: str) -> None:
    with transaction() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED.value).values(celery_task_id=task_id)
        )


def settle_finished_parents() -> list[int]:
    """End RUNNING parent jobs (comparisons) whose children have all ended: the report job settles its
    parent itself, but not when it never ran (its worker died for good, its message was lost for good).
    Returns the settled ids."""
    with transaction() as session:
        parents = session.scalars(
            select(Job).where(Job.state == JobState.RUNNING.value, Job.stage.in_(ORCHESTRATED))
        ).all()
        settled = []
        for parent in parents:
            children = session.scalars(select(Job).where(Job.parent_id == parent.id)).all()
            if not children or not all(JobState(child.state).finished for child in children):
                continue
            values = _final_values(children)
            result = session.execute(
                update(Job).where(Job.id == parent.id, Job.state == JobState.RUNNING.value).values(**values)
            )
            if result.rowcount == 1:
                settled.append(parent.id)
                log.warning("job %s: all its children ended; settled %s by the sweep", parent.id, values["state"])
    return settled


def _final_values(children: list[Job]) -> dict[str, Any]:
    unsuccessful = [c for c in children if c.state != JobState.SUCCEEDED.value]
    report = next((c for c in children if c.stage == Stage.report.value and c.artifacts), None)
    values: dict[str, Any] = {"finished_at": utcnow(), "error": None}
    if report is not None:
        values["artifacts"] = report.artifacts
    if not unsuccessful:
        values["state"] = JobState.SUCCEEDED.value
    elif all(c.state == JobState.CANCELLED.value for c in unsuccessful):
        values.update(state=JobState.CANCELLED.value, error="cancelled")
    else:
        summary = "; ".join(
            f"job {c.id} ({c.stage}) {c.state}: {(c.error or 'no error recorded').splitlines()[0]}"
            for c in unsuccessful
        )
        values.update(state=JobState.FAILED.value, error=f"{len(unsuccessful)} step(s) did not succeed ({summary})")
    return values
