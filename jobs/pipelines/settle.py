"""The parent of a comparison or sweep: no worker runs it, so it is RUNNING from submission until its report
job, a cancel or a refused canvas gives it its final state here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from db.models import Job, utcnow
from jobs.core.database import transaction
from jobs.core.schemas import JobState


def settle_parent(parent_id: int, state: JobState, error: str | None = None, artifacts: dict | None = None) -> None:
    """Give the comparison its final state (called by its report job, or when it could not be queued)."""
    values: dict[str, Any] = {"state": state.value, "finished_at": utcnow(), "error": error}
    if artifacts is not None:
        values["artifacts"] = artifacts
    with transaction() as session:
        session.execute(update(Job).where(Job.id == parent_id, Job.state == JobState.RUNNING.value).values(**values))


def fail_queued_children(parent_id: int, error: str) -> None:
    with transaction() as session:
        session.execute(
            update(Job)
            .where(Job.parent_id == parent_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.FAILED.value, error=error, finished_at=utcnow())
        )


def parent_finished(parent_id: int) -> bool:
    """Whether the parent has its final state (a cancel while its children run inline)."""
    with transaction() as session:
        state = session.scalar(select(Job.state).where(Job.id == parent_id))
    return state is None or JobState(state).finished
