"""Sending job messages to the broker and revoking them; nothing here runs a job."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Signature

from jobs.celery_app import app_for, declare_queues, queue_for
from jobs.settings import get_settings
from jobs.stages import Stage

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message; the job could not be queued."""


def stage_signature(job_id: int, stage: Stage, task_id: str, max_time_s: int) -> Signature:
    """The message that runs one job: its stage's task on the stage's queue, with the job's time limits.

    Canvas building block (a comparison's chord): create the child job with `service.create_job(request,
    task_id=...)`, then put `stage_signature(job.id, ...)` in the group. It ignores a parent's result.
    """
    settings = get_settings()
    return _ready(app_for(settings)).signature(
        stage.value,
        args=(job_id,),
        immutable=True,
        task_id=task_id,
        queue=queue_for(stage),
        soft_time_limit=max_time_s,
        time_limit=max_time_s + settings.time_limit_grace_s,
    )


def enqueue(job_id: int, stage: Stage, task_id: str, max_time_s: int) -> None:
    """Send the stage's task for a job; its time limits come from the job's config.train.max_time_s."""
    try:
        stage_signature(job_id, stage, task_id, max_time_s).apply_async(
            retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
        )
    except Exception as exc:  # kombu raises transport-specific errors
        broker = _safe(get_settings().broker)
        raise BrokerUnavailable(f"broker {broker} did not accept the job: {exc}") from exc


def resend(delivery: dict[str, Any]) -> str:
    """Send a stored delivery (jobs/tasks.py `delivery_of`) again, same task id and canvas; returns the task id."""
    options = dict(delivery["options"])
    _ready(app_for()).send_task(delivery["task"], args=delivery["args"], kwargs=delivery["kwargs"], **options)
    return str(options["task_id"])


_declared: set[int] = set()


def ready_app() -> Celery:
    """The app for the current settings, its queues declared (once per process)."""
    return _ready(app_for())


def _ready(app: Celery) -> Celery:
    if id(app) not in _declared:
        declare_queues(app)
        _declared.add(id(app))
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
