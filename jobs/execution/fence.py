"""Fencing: every write a run makes after its claim holds only while the run still owns the job.

A claim raises the job's attempt counter by one (jobs/execution/claim.py), so the attempt number is a fencing
token: a write carries it and is refused once another claim has moved the counter on. The check is part of
the write's own transaction, not a flag a heartbeat thread sets later: a worker woken from SIGSTOP, a long GC
pause or a network split can finish a batch, an epoch and an upload before its heartbeat thread runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from db.models import Job
from jobs.core.database import transaction
from jobs.core.schemas import JobState
from worker.recorder import JobLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fence:
    """One run's claim on its job: the owner and the attempt number it claimed."""

    job_id: int
    worker_id: str
    attempt: int

    def owned(self) -> ColumnElement[bool]:
        """The WHERE clause of a job-row write that may only happen while this run owns the job."""
        return and_(
            Job.id == self.job_id,
            Job.worker_id == self.worker_id,
            Job.attempts == self.attempt,
            Job.state == JobState.RUNNING.value,
        )

    def hold(self, session: Session) -> None:
        """Lock the job row for the rest of `session`'s transaction while this run owns it; JobLost otherwise.

        A no-op UPDATE rather than a read: it takes the row's write lock, so a takeover's claim (an UPDATE of
        the same row) waits until this transaction commits, and a write made under the lock is never one the
        new owner has already superseded."""
        touched = session.execute(update(Job).where(self.owned()).values(attempts=Job.attempts)).rowcount
        if touched != 1:
            raise JobLost(self.refusal(session))

    def check(self) -> None:
        """JobLost unless this run still owns the job (before a bucket upload, which no transaction covers).
        A read, not a lock: a process paused while it holds SQLite's write lock would stop every other writer,
        the claim of the worker taking its job over included."""
        with transaction() as session:
            if session.scalar(select(func.count()).select_from(Job).where(self.owned())) != 1:
                raise JobLost(self.refusal(session))

    def refusal(self, session: Session) -> str:
        """One line naming the fenced attempt and who owns the job now."""
        row = session.execute(select(Job.attempts, Job.worker_id, Job.state).where(Job.id == self.job_id)).first()
        now = f"now attempt {row.attempts} by {row.worker_id}, {row.state}" if row else "the job is gone"
        return f"job {self.job_id}: attempt {self.attempt} ({self.worker_id}) is fenced off ({now}); it writes nothing"
