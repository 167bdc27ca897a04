"""Who runs a job: claiming it, proving it is still being worked on, and taking over from dead workers.

The job row is the source of truth, not the broker. Every change of owner is one conditional UPDATE
guarded by the row's (state, attempts) as read, so two workers racing for a job cannot both win: the
attempt counter rises by one on every claim, which makes it a version number.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from db.models import Job, utcnow
from jobs.broker import queue
from jobs.core.database import retry_write, transaction
from jobs.core.schemas import JobState
from jobs.core.settings import Settings, get_settings
from jobs.core.stages import ORCHESTRATED_STAGES, Stage
from jobs.execution import lastwords, unpublished

log = logging.getLogger(__name__)
DEFAULT_MAX_TIME_S = 24 * 3600
# Parents (comparisons, sweeps): no worker runs them; their report job, or the sweep, settles them.
ORCHESTRATED = [stage.value for stage in ORCHESTRATED_STAGES]


@dataclass(frozen=True)
class WorkerIdentity:
    """One claim's owner: host and process, plus a token so a reused pid is a different owner."""

    worker_id: str
    host: str

    @classmethod
    def current(cls) -> WorkerIdentity:
        host = socket.gethostname()
        return cls(worker_id=f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}", host=host)


@dataclass(frozen=True)
class Claim:
    job_id: int
    acquired: bool
    reason: str
    attempt: int = 0
    takeover: bool = False
    previous_worker: str | None = None  # the earlier attempt's worker, fenced off from now on


def max_time_s(config: dict[str, Any] | None) -> int:
    """The job's time limit (config.train.max_time_s), read from the stored config without the worker package."""
    return int((config or {}).get("train", {}).get("max_time_s", DEFAULT_MAX_TIME_S))


def _died_at_time_limit(
    started_at: datetime | None, heartbeat_at: datetime | None, config: dict[str, Any] | None
) -> bool:
    """The last attempt beat until its time limit: Celery's hard limit killed it; running it again would too."""
    return (
        started_at is not None
        and heartbeat_at is not None
        and heartbeat_at - started_at >= timedelta(seconds=max_time_s(config))
    )


def _stale(job: Job, now: datetime, settings: Settings) -> bool:
    beat = job.heartbeat_at or job.started_at
    return beat is None or now - beat > timedelta(seconds=settings.stale_after_s)


def claim(
    job_id: int, worker: WorkerIdentity, settings: Settings | None = None, delivery: dict[str, Any] | None = None
) -> Claim:
    """Take the job for `worker` if it is QUEUED, or RUNNING with a stale heartbeat (its worker died).

    A finished job, or one running elsewhere with a fresh heartbeat, is left alone (a redelivered
    message does nothing). A job that has used up its attempts ends FAILED instead of running again.
    `delivery` (the Celery message running it, see jobs/execution/tasks.py) is kept for a re-queue.
    """
    settings = settings or get_settings()
    with transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            return Claim(job_id, False, "no such job")
        state, attempts, now = JobState(job.state), job.attempts, utcnow()
        if state.finished:
            return Claim(job_id, False, f"job already {state.value}")
        takeover = state is JobState.RUNNING
        if takeover and not _stale(job, now, settings):
            return Claim(job_id, False, f"job is running on {job.worker_id} (heartbeat is fresh)")
        snapshot, previous_worker = _Snapshot.of(job, session), job.worker_id
    stale_before = now - timedelta(seconds=settings.stale_after_s) if takeover else None
    if (settled := _settle_if_over(snapshot, settings, stale_before)) is not None:
        return Claim(job_id, False, settled)
    claimed = _guarded_update(
        job_id,
        state,
        attempts,
        stale_before=stale_before,
        state=JobState.RUNNING.value,
        worker_id=worker.worker_id,
        worker_host=worker.host,
        heartbeat_at=now,
        attempts=attempts + 1,
        started_at=now,
        error=None,
        **({"delivery": delivery} if delivery is not None else {}),
    )
    if not claimed:
        return Claim(job_id, False, "another worker claimed the job first")
    if takeover:
        log.warning("job %s: took over from a worker whose heartbeat went stale (attempt %s)", job_id, attempts + 1)
    reason = "taken over" if takeover else "claimed"
    # A job re-queued by the sweep keeps the worker of its last attempt in the row until claimed again.
    previous = previous_worker if attempts > 0 else None
    return Claim(job_id, True, reason, attempt=attempts + 1, takeover=takeover, previous_worker=previous)


@retry_write
def _guarded_update(
    job_id: int, read_state: JobState, read_attempts: int, *, stale_before: datetime | None = None, **values: object
) -> bool:
    """Apply `values` only if the row is still as read (and, for a takeover, its heartbeat still stale)."""
    query = update(Job).where(Job.id == job_id, Job.state == read_state.value, Job.attempts == read_attempts)
    if stale_before is not None:
        query = query.where(or_(Job.heartbeat_at < stale_before, Job.heartbeat_at.is_(None)))
    with transaction() as session:
        return session.execute(query.values(**values)).rowcount == 1


@dataclass(frozen=True)
class _Snapshot:
    """A job row as read before a guarded update."""

    job_id: int
    state: JobState
    attempts: int
    cancel_requested: bool
    config: dict[str, Any] | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    publish_pending: bool = False  # its run finished; `jobs publish` queued it again to upload the files

    @classmethod
    def of(cls, job: Job, session: Session) -> _Snapshot:
        return cls(
            job.id,
            JobState(job.state),
            job.attempts,
            job.cancel_requested,
            job.config,
            job.started_at,
            job.heartbeat_at,
            unpublished.pending(session, job.id),
        )


def _settle_if_over(job: _Snapshot, settings: Settings, stale_before: datetime | None) -> str | None:
    """End a job that must not run again: cancelled, killed at its time limit, or out of attempts.

    Returns why (None: the job may run). `stale_before` guards a takeover: the row changes only if its
    heartbeat is still stale.
    """
    # A run that ended without recording it left its final state beside its log; the job may have been
    # re-queued meanwhile (a sweep that flipped it before the run gave up), so a QUEUED job is checked too.
    words = lastwords.read(job.job_id)
    if job.cancel_requested:  # the user asked it to stop (before its worker died, if it was running)
        state, error = JobState.CANCELLED, "cancelled"
    elif words is not None:  # its run ended but could not record it: record what it left
        state, error = JobState(words[0]), words[1]
    elif job.state is JobState.RUNNING and _died_at_time_limit(job.started_at, job.heartbeat_at, job.config):
        state = JobState.FAILED
        error = f"time limit: the job ran longer than train.max_time_s={max_time_s(job.config)}s"
    elif job.attempts >= settings.max_attempts and not (job.state is JobState.QUEUED and job.publish_pending):
        # A publish retry asked for by the user is not a worker dying again: it runs whatever the count.
        state = JobState.FAILED
        error = (
            f"worker lost: the job was started {job.attempts} times (JOBS_MAX_ATTEMPTS={settings.max_attempts}) "
            "and its worker died each time; check the worker logs (out of memory?) and submit it again"
        )
    else:
        return None
    settled = _guarded_update(
        job.job_id,
        job.state,
        job.attempts,
        stale_before=stale_before,
        state=state.value,
        error=error,
        finished_at=utcnow(),
    )
    if settled and words is not None:
        lastwords.forget(job.job_id)
    return error or state.value


@retry_write
def beat(job_id: int, worker: WorkerIdentity, attempt: int | None = None) -> bool:
    """Refresh the heartbeat; False once the job is no longer ours (taken over, or finished elsewhere)."""
    query = update(Job).where(Job.id == job_id, Job.worker_id == worker.worker_id, Job.state == JobState.RUNNING.value)
    if attempt is not None:
        query = query.where(Job.attempts == attempt)
    with transaction() as session:
        return session.execute(query.values(heartbeat_at=utcnow())).rowcount == 1


class Heartbeat:
    """A daemon thread that beats every `interval_s` while the job runs; `lost` is set if the job stops being ours."""

    def __init__(
        self, job_id: int, worker: WorkerIdentity, interval_s: float | None = None, *, attempt: int | None = None
    ) -> None:
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.interval_s = interval_s or get_settings().heartbeat_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-job-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating (before the run writes its final state, which ends the row's RUNNING)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                still_ours = beat(self.job_id, self.worker, self.attempt)
            except Exception:  # the database is away for over a minute: keep working, try again
                log.exception("job %s: heartbeat failed", self.job_id)
                continue
            if not still_ours and not self._stop.is_set():
                log.error(
                    "job %s: no longer owned by %s (attempt %s is fenced off); stopping this run without writing",
                    self.job_id,
                    self.worker.worker_id,
                    self.attempt,
                )
                self.lost.set()
                return


def sweep_stale_jobs(settings: Settings | None = None) -> list[int]:
    """Re-queue RUNNING jobs whose worker is gone (stale heartbeat); fail those out of attempts.

    Redis redelivers a dead worker's message only after its visibility timeout (weeks, to outlast long
    jobs), so workers call this at start and periodically. Returns the re-queued ids.
    """
    settings = settings or get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    with transaction() as session:
        stale = session.scalars(
            select(Job).where(
                Job.state == JobState.RUNNING.value,
                Job.stage.not_in(ORCHESTRATED),
                or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None)),
            )
        ).all()
        jobs = [
            (_Snapshot.of(job, session), Stage(job.stage), job.delivery, (job.request or {}).get("gpu_class"))
            for job in stale
        ]
    requeued = []
    for job, stage, delivery, gpu_class in jobs:
        if _settle_if_over(job, settings, cutoff) is not None:
            continue
        # Send first, then flip the row: if the send fails the job stays stale and the next sweep retries;
        # if another worker took the job meanwhile, the guarded update fails and the message does nothing.
        if delivery:
            # The message as it was (same task id, same chain/chord): the canvas continues after this job.
            task_id = queue.resend(delivery)
        else:
            task_id = str(uuid.uuid4())
            queue.enqueue(job.job_id, stage, task_id, max_time_s(job.config), gpu_class)
        if _guarded_update(
            job.job_id,
            job.state,
            job.attempts,
            stale_before=cutoff,
            state=JobState.QUEUED.value,
            celery_task_id=task_id,
        ):
            log.warning("job %s: worker gone (no heartbeat for %ss); re-queued", job.job_id, settings.stale_after_s)
            requeued.append(job.job_id)
    return requeued
