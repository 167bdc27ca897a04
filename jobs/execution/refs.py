"""A child job's inputs named as ``job:<id>`` (a comparison's train-full names its train job, its evaluate
names its train-full): resolved to that job's checkpoint when the child starts, not when it is submitted,
because the earlier job has not run yet then."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.models import Experiment, Job
from jobs.core.database import transaction
from jobs.core.schemas import JobState

JOB_REF = "job:"


class JobRefError(ValueError):
    """A child's input job did not produce what the child needs."""


def job_ref(job_id: int) -> str:
    """The param value that names job `job_id`'s checkpoint."""
    return f"{JOB_REF}{job_id}"


def resolve_job_refs(params: dict[str, Any]) -> dict[str, Any]:
    """Replace ``job:<id>`` values by that job's checkpoint; a job that did not succeed is a JobRefError."""
    resolved = dict(params)
    for name, value in params.items():
        if isinstance(value, str) and value.startswith(JOB_REF):
            resolved[name] = _checkpoint_of(int(value.removeprefix(JOB_REF)), name)
    return resolved


def _checkpoint_of(job_id: int, param: str) -> str:
    with transaction() as session:
        job = session.get(Job, job_id)
        checkpoint = session.scalar(
            select(Experiment.checkpoint_path).where(Experiment.job_id == job_id).order_by(Experiment.id.desc())
        )
        state, error = (job.state, job.error) if job else (None, None)
    if state != JobState.SUCCEEDED.value:
        reason = f": {error.splitlines()[0]}" if error else ""
        raise JobRefError(f"{param}: input job {job_id} ended {state}{reason}; nothing to continue from")
    if not checkpoint:
        raise JobRefError(f"{param}: input job {job_id} succeeded but recorded no checkpoint")
    return checkpoint
