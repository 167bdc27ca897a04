"""How `jobs submit --wait` decides that nobody is working on a job any more.

The job's own rows are the first witness. A run writes its heartbeat into its row; a loaded worker answers
pings late (its main process is starved while a child trains), so a RUNNING job whose heartbeat moves is
alive whatever the pings say. Any change of the job or of its children (state, attempt, heartbeat) counts
as life; workers are pinged only while the rows stand still, which is what a queued job waiting for a
worker looks like.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from jobs.broker import queue
from jobs.core.schemas import JobState, JobView

WORKER_PING_EVERY_S = 5.0


def _signs_of_life(job: JobView) -> Hashable:
    """What moves while someone works on the job: its own and its children's state, attempt and heartbeat."""
    return tuple((view.id, view.state, view.attempts, view.heartbeat_at) for view in (job, *job.children))


def _any_worker_answers() -> bool:
    return bool(queue.workers_answering())


class JobWatch:
    """Seconds since anything showed that the job is being worked on, or that a worker is there to take it."""

    def __init__(self, patience_s: float, ping: Callable[[], bool] = _any_worker_answers) -> None:
        self.patience_s = patience_s
        self.every_s = min(WORKER_PING_EVERY_S, patience_s / 4)
        self._ping = ping
        self._signs: Hashable = None
        self._moved_at = self._worker_seen_at = self._asked_at = time.monotonic()

    def silent_for(self, job: JobView) -> float:
        """Observe the job as just read; returns how long nothing has shown life."""
        now = time.monotonic()
        if (signs := _signs_of_life(job)) != self._signs:
            self._signs, self._moved_at = signs, now
        elif now - self._moved_at >= self.every_s and now - self._asked_at >= self.every_s:
            self._asked_at = now
            if self._ping():
                self._worker_seen_at = time.monotonic()
        return time.monotonic() - max(self._moved_at, self._worker_seen_at)

    def gave_up_message(self, job: JobView, silent_s: float) -> str:
        """Why `--wait` stops following the job, naming the state the job is really in."""
        setting = f"JOBS_STALE_AFTER_S={self.patience_s:g}"
        start = "`jobs worker` (same DATABASE_URL and CELERY_BROKER_URL)"
        if job.state is JobState.QUEUED:
            return (
                f"no worker has answered for {silent_s:.0f}s ({setting}); job {job.id} stays QUEUED and runs once "
                f"a worker starts: {start}, then `jobs status {job.id}`"
            )
        return (
            f"job {job.id} is {job.state.value} but nothing of it has moved for {silent_s:.0f}s (no heartbeat, no "
            f"state change) and no worker answers ({setting}): its worker is gone or stalled; a worker that starts "
            f"re-queues it and resumes from its last checkpoint: {start}, then `jobs status {job.id}`"
        )
