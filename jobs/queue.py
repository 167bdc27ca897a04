"""Sending job messages to the broker and revoking them; nothing here runs a job."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Signature

from jobs.celery_app import CPU_QUEUE, GPU_QUEUE, app_for, declare_queues, queue_for
from jobs.settings import get_settings
from jobs.stages import Stage

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message; the job could not be queued."""


def stage_signature(
    job_id: int, stage: Stage, task_id: str, max_time_s: int, gpu_class: str | None = None
) -> Signature:
    """The message that runs one job: its stage's task on the stage's queue, with the job's time limits.

    Canvas building block (a comparison's chord): create the child job with `service.create_job(request,
    task_id=...)`, then put `stage_signature(job.id, ...)` in the group. It ignores a parent's result.
    """
    settings = get_settings()
    queue = queue_for(stage, gpu_class)
    return _ready(app_for(settings), queue).signature(
        stage.value,
        args=(job_id,),
        immutable=True,
        task_id=task_id,
        queue=queue,
        soft_time_limit=max_time_s,
        time_limit=max_time_s + settings.time_limit_grace_s,
    )


def enqueue(job_id: int, stage: Stage, task_id: str, max_time_s: int, gpu_class: str | None = None) -> None:
    """Send the stage's task for a job; its time limits come from the job's config.train.max_time_s."""
    try:
        stage_signature(job_id, stage, task_id, max_time_s, gpu_class).apply_async(
            retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
        )
    except Exception as exc:  # kombu raises transport-specific errors
        broker = _safe(get_settings().broker)
        raise BrokerUnavailable(f"broker {broker} did not accept the job: {exc}") from exc


def resend(delivery: dict[str, Any]) -> str:
    """Send a stored delivery (jobs/tasks.py `delivery_of`) again, same task id and canvas; returns the task id."""
    options = dict(delivery["options"])
    app = _ready(app_for(), options.get("queue"))
    app.send_task(delivery["task"], args=delivery["args"], kwargs=delivery["kwargs"], **options)
    return str(options["task_id"])


_declared: set[tuple[int, str | None]] = set()


def ready_app() -> Celery:
    """The app for the current settings, its queues declared (once per process)."""
    return _ready(app_for())


def _ready(app: Celery, queue: str | None = None) -> Celery:
    """The app with its queues declared once per process, plus `queue` when it is a GPU-class queue."""
    extra = queue if queue and queue not in (GPU_QUEUE, CPU_QUEUE) else None
    if (id(app), extra) not in _declared:
        declare_queues(app, [extra] if extra else [])
        _declared.add((id(app), extra))
    return app


def revoke(task_id: str) -> None:
    """Ask workers to drop a queued message (best effort: the claim refuses a cancelled job anyway)."""
    try:
        app_for().control.revoke(task_id)
    except Exception as exc:  # not every transport supports broadcast (the SQLite broker does not)
        log.info("revoke of %s not broadcast (%s); the job row's CANCELLED state stops it", task_id, exc)


def broker_health() -> str:
    try:
        with app_for().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        return f"error: {exc}"
    return "ok"


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
