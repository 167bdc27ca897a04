"""`--resume` on a new job: which earlier job it continues.

The earlier job is the latest one of the same stage whose config is the same apart from the resume flag. It
must have ended (succeeded, failed or cancelled): a queued or running one would share its run folder, and its
last.ckpt, with the new job, two trainers writing one checkpoint. Checked when the job is submitted (one
line, before any row exists) and again when it starts (the earlier job may have been re-queued meanwhile).
A job whose training finished but whose files wait for their publish (jobs/execution/unpublished.py) is not
resumed either: `jobs publish` finishes it without training again, where a resume would train on (one more
epoch for a run stopped early).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from db.models import Job
from jobs.core.database import transaction
from jobs.core.schemas import JobState
from jobs.execution import unpublished

# How many of the stage's latest jobs are compared: a config is hashed in Python, not by the database.
LOOKBACK = 500


class EarlierJobActive(ValueError):
    """`--resume` names, by its config, a job that has not ended."""


@dataclass(frozen=True)
class EarlierJob:
    job_id: int
    state: JobState
    run_dir: str | None


def unflagged_hash(config: dict[str, Any]) -> str:
    """The config's hash with train.resume off: a resumed run and the run it continues hash the same."""
    from worker.config import RunConfig  # torch-free

    unflagged = RunConfig.model_validate(config)
    unflagged.train.resume = False
    return unflagged.config_hash()


def earlier_job(stage: str, config: dict[str, Any], before_id: int | None = None) -> EarlierJob | None:
    """The latest job of `stage` with the same config (resume flag aside), submitted before `before_id`."""
    wanted = unflagged_hash(config)
    query = select(Job.id, Job.state, Job.run_dir, Job.config).where(Job.stage == stage, Job.config.is_not(None))
    if before_id is not None:
        query = query.where(Job.id < before_id)
    with transaction() as session:
        rows = session.execute(query.order_by(Job.id.desc()).limit(LOOKBACK)).all()
    for row in rows:
        if _hash_or_none(row.config) == wanted:
            return EarlierJob(row.id, JobState(row.state), row.run_dir)
    return None


def _hash_or_none(config: dict[str, Any]) -> str | None:
    try:
        return unflagged_hash(config)
    except ValueError:  # a config an older version stored, no longer valid: not the same config anyway
        return None


def resumable_job(stage: str, config: dict[str, Any], before_id: int | None = None) -> EarlierJob | None:
    """The earlier job `--resume` continues (None: there is none, the run starts fresh); EarlierJobActive,
    one line naming it, when that job is still queued or running."""
    earlier = earlier_job(stage, config, before_id)
    if earlier is not None and not earlier.state.finished:
        raise EarlierJobActive(
            f"--resume: the earlier job {earlier.job_id} with this config is {earlier.state.value}; "
            f"wait for it to end or cancel it (`jobs cancel {earlier.job_id}`), then resume"
        )
    if earlier is not None and _publish_pending(earlier.job_id):
        raise EarlierJobActive(
            f"--resume: the earlier job {earlier.job_id} with this config finished training but its files are not "
            f"in the bucket yet (publish pending); `jobs publish {earlier.job_id}` publishes them without training"
        )
    return earlier


def _publish_pending(job_id: int) -> bool:
    with transaction() as session:
        return unpublished.pending(session, job_id)
