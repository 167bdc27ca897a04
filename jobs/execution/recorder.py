"""The Recorder a stage receives inside a job: metrics to the metrics table, progress and cancellation via the job row.

It satisfies worker.recorder.Recorder. A metric write that fails is retried with backoff and, if the
database stays away, raised: the stage fails loudly rather than losing a curve point silently. Inside a job
every write is fenced (jobs/execution/fence.py): refused, with JobLost, once another attempt owns the job.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select, update

from db.models import Job
from db.queries import upsert_metrics
from jobs.core.database import retry_write, transaction
from jobs.execution.fence import Fence
from worker.recorder import JobLost

ProgressCallback = Callable[[dict[str, Any]], None]


class DatabaseRecorder:
    def __init__(
        self,
        job_id: int,
        experiment_id: int,
        *,
        fence: Fence | None = None,
        lost: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
        before_epoch: Callable[[], bool] | None = None,
        min_interval_s: float = 1.0,
    ) -> None:
        self.job_id = job_id
        self.experiment_id = experiment_id
        self.fence = fence  # None outside a claimed job (a report's test metrics)
        self.lost = lost or threading.Event()
        self.on_progress = on_progress
        # Called before an epoch's metrics are recorded (the artifacts bucket's upload of the run folder): a
        # stage writes last.ckpt before it records the epoch, so what the metrics describe is in the bucket.
        # It returns False when the upload did not happen (the bucket is away): the epoch is then not recorded,
        # since a takeover could not resume after it.
        self.before_epoch = before_epoch
        # Stages may report every step; the job row needs at most one progress write and one
        # cancellation read per interval.
        self.min_interval_s = min_interval_s
        self._last_progress_write = 0.0
        self._last_cancel_check = 0.0
        self._cancel_requested = False
        self._waiting: list[tuple[Mapping[str, float], str, int]] = []  # epochs whose checkpoint is not uploaded

    def log_metrics(
        self, metrics: Mapping[str, float], *, split: str, epoch: int | None = None, step: int | None = None
    ) -> None:
        self.ensure_owner()
        if epoch is None or step is not None or self.before_epoch is None:
            self._write_metrics(metrics, split=split, epoch=epoch, step=step)
            return
        self._waiting.append((dict(metrics), split, epoch))
        if self.before_epoch():
            self.record_waiting()

    def record_waiting(self) -> None:
        """Record the epochs kept back while their checkpoint was not in the bucket (it is now)."""
        while self._waiting:
            metrics, split, epoch = self._waiting[0]
            self._write_metrics(metrics, split=split, epoch=epoch, step=None)
            self._waiting.pop(0)

    @retry_write
    def _write_metrics(self, metrics: Mapping[str, float], *, split: str, epoch: int | None, step: int | None) -> None:
        values = [(str(name), float(value)) for name, value in metrics.items()]
        with transaction() as session:
            upsert_metrics(session, self.experiment_id, values, split=split, epoch=epoch, step=step)
            if self.fence is not None:  # last, so the job row is locked only for the commit that follows
                self.fence.hold(session)

    def progress(self, *, epoch: int, step: int, total: int) -> None:
        now = time.monotonic()
        done = total > 0 and step >= total
        if not done and now - self._last_progress_write < self.min_interval_s:
            return
        self._last_progress_write = now
        percent = round(100.0 * step / total, 1) if total > 0 else None
        payload = {"epoch": epoch, "step": step, "total": total, "percent": percent}
        self._write_progress(payload)
        if self.on_progress is not None:
            self.on_progress(payload)

    @retry_write
    def _write_progress(self, payload: dict[str, Any]) -> None:
        with transaction() as session:
            if self.fence is None:
                session.execute(update(Job).where(Job.id == self.job_id).values(progress=payload))
            elif session.execute(update(Job).where(self.fence.owned()).values(progress=payload)).rowcount != 1:
                raise JobLost(self.fence.refusal(session))

    def cancelled(self) -> bool:
        """True once the user cancelled the job; JobLost once it stopped being this run's (taken over)."""
        if self.lost.is_set():
            self.ensure_owner()
        if self._cancel_requested:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= self.min_interval_s:
            self._last_cancel_check = now
            with transaction() as session:
                flag = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
            self._cancel_requested = bool(flag)
        return self._cancel_requested

    def ensure_owner(self) -> None:
        """JobLost unless the job row still names this run's attempt (read now, not the heartbeat's last word)."""
        if self.fence is not None:
            self.fence.check()


def json_safe(value: Any) -> Any:
    """What a JSON column takes: NaN/infinity (refused by PostgreSQL) become null, numpy/torch scalars
    plain numbers, paths and other objects their text."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, Mapping | list | tuple):
        try:
            value = value.item()  # numpy or one-element torch scalar
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)
