"""Sending, revoking and inspecting job messages (what is queued, which workers answer); nothing here runs a job."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery, Signature
from kombu.utils.url import maybe_sanitize_url

from jobs.broker.celery_app import CPU_QUEUE, GPU_QUEUE, app_for, declare_queues, ensure_broker, queue_for
from jobs.broker.task_labels import job_task_label
from jobs.core.settings import get_settings
from jobs.core.stages import Stage

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message; the job could not be queued."""


def stage_signature(
    job_id: int, stage: Stage, task_id: str, max_time_s: int, gpu_class: str | None = None
) -> Signature:
    """The message that runs one job: its stage's task on the stage's queue, with the job's time limits.

    A comparison's canvas (jobs/pipelines/launch.py) chains one per child job; being immutable, it ignores
    the result of the step before it.
    """
    settings = get_settings()
    queue = queue_for(stage, gpu_class)
    return _ready(app_for(settings), queue).signature(
        stage.value,
        args=(job_id,),
        argsrepr=job_task_label(job_id, stage.value),  # what Flower shows, in the task-sent event too
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
        raise BrokerUnavailable(f"broker {safe_url(get_settings().broker)} did not accept the job: {exc}") from exc


def resend(delivery: dict[str, Any]) -> str:
    """Send a stored delivery (`delivery_of` in jobs/execution/tasks.py) again, same task id and canvas;
    returns the task id."""
    options = dict(delivery["options"])
    app = _ready(app_for(), options.get("queue"))
    app.send_task(delivery["task"], args=delivery["args"], kwargs=delivery["kwargs"], **options)
    return str(options["task_id"])


def ready_app() -> Celery:
    """The app for the current settings, the broker started (the local one) and its queues declared."""
    return _ready(app_for())


def _ready(app: Celery, queue: str | None = None) -> Celery:
    """The app with the broker up and its queues declared, plus `queue` when it is a GPU-class queue.

    Before every send, not once per process: a local broker stopped since (`jobs broker stop`) is started
    again, and one started from an empty folder has lost its queue bindings. (A once-per-process memo keyed
    by id(app) also went stale in a long test run: the app cache evicts apps, and a new app can reuse a freed
    app's id, so a test's local broker was never started.) Declaring is a few Redis commands."""
    extra = queue if queue and queue not in (GPU_QUEUE, CPU_QUEUE) else None
    ensure_broker()
    declare_queues(app, [extra] if extra else [])
    return app


def workers_answering(timeout_s: float = 1.0) -> list[str]:
    """Names of the workers that answer a ping (none when the broker is away)."""
    try:
        replies = app_for().control.ping(timeout=timeout_s, limit=1) or []
    except Exception:
        return []
    return [name for reply in replies for name in reply]


def revoke(task_id: str) -> None:
    """Ask workers to drop a queued message (best effort: the claim refuses a cancelled job anyway)."""
    try:
        app_for().control.revoke(task_id)
    except Exception as exc:  # the broker is away: the job row's CANCELLED state stops it anyway
        log.info("revoke of %s not broadcast (%s); the job row's CANCELLED state stops it", task_id, exc)


def broker_health() -> str:
    try:
        ensure_broker()
        with app_for().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        return f"error: {exc}"
    return "ok"


def pending_task_ids(reserved_after: float, app: Celery | None = None) -> set[str]:
    """Task ids of the messages that will still run: waiting in a queue, or reserved by a worker since the
    unix time `reserved_after`. A worker claims a job within moments of reserving its message, so a QUEUED
    job's message reserved long before belongs to a worker that died (Redis would hand it back only after
    the visibility timeout of weeks)."""
    app = app or ready_app()
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        names = {q.name for q in app.conf.task_queues} | {key.decode() for key in client.scan_iter(match="gpu.*")}
        payloads = [raw for name in names if client.type(name) == b"list" for raw in client.lrange(name, 0, -1)]
        # kombu's redis transport keeps reserved messages in "unacked" (tag -> [message, exchange, routing key])
        # and their delivery times in "unacked_index".
        recent = client.zrangebyscore("unacked_index", reserved_after, "+inf")
        if recent:
            payloads += [json.loads(entry)[0] for entry in client.hmget("unacked", recent) if entry]
    ids = set()
    for payload in payloads:
        message = json.loads(payload) if isinstance(payload, bytes | str) else payload
        task_id = (message.get("headers") or {}).get("id")
        if task_id:
            ids.add(str(task_id))
    return ids


def safe_url(url: str) -> str:
    """A URL without its password, for messages."""
    return str(maybe_sanitize_url(url))
