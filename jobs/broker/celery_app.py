"""The Celery app: broker and result backend from settings, and the settings long GPU jobs need.

`celery -A jobs.broker.celery_app worker` (what `jobs worker` runs) loads `app`; code that only sends messages
uses `app_for(settings)`, so tests that point the settings at another broker get a matching app.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from celery import Celery
from celery.app import backends
from kombu import Queue

from jobs.broker import localbroker, task_labels  # noqa: F401  (labels each job's message for Flower)
from jobs.broker.result_backend import PollingRedisBackend
from jobs.core.settings import Settings, get_settings
from jobs.core.stages import GPU_CLASS_PATTERN, GPU_STAGES, Stage

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
# The longest job a config may ask for (TrainConfig.max_time_s allows up to 14 days), plus an hour of slack.
LONGEST_JOB_S = 14 * 24 * 3600
VISIBILITY_TIMEOUT_S = LONGEST_JOB_S + 3600


def queue_for(stage: Stage, gpu_class: str | None = None) -> str:
    if stage not in GPU_STAGES:
        return CPU_QUEUE
    return f"{GPU_QUEUE}.{gpu_class}" if gpu_class else GPU_QUEUE


def is_queue_name(name: str) -> bool:
    """gpu, cpu, or gpu.<class>."""
    if name in (GPU_QUEUE, CPU_QUEUE):
        return True
    prefix, dot, gpu_class = name.partition(".")
    return prefix == GPU_QUEUE and bool(dot) and re.match(GPU_CLASS_PATTERN, gpu_class) is not None


REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")


class UnsupportedBroker(ValueError):
    """The broker or result backend URL is not a Redis one."""


def _require_redis(name: str, url: str) -> None:
    # One broker technology everywhere: the re-queue sweep reads Redis's queues, and the SQL transport
    # lost chord callbacks and deadlocked forked children.
    if not url.startswith(REDIS_SCHEMES):
        scheme = url.partition("://")[0] or url
        raise UnsupportedBroker(
            f"{name}: '{scheme}' is not supported; use a Redis URL (redis://HOST:6379/0, rediss://, "
            "redis+socket:///PATH), or unset it to use the local Redis the project starts in var/broker"
        )


class JobsCelery(Celery):
    """Celery with the Redis result backend that never subscribes to results (jobs/broker/result_backend.py)."""

    def _get_backend(self) -> PollingRedisBackend:
        _require_redis("CELERY_RESULT_BACKEND", self.conf.result_backend)
        _, url = backends.by_url(self.conf.result_backend, self.loader)
        return PollingRedisBackend(app=self, url=url)


def create_app(broker: str, backend: str) -> Celery:
    app = JobsCelery("medvl", broker=broker, backend=backend)
    app.conf.update(
        # JSON only: a pickled message could run arbitrary code in the worker, so it is refused.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Acknowledge after the task ends, so a job whose worker dies is delivered again, not lost.
        task_acks_late=True,
        # A child killed mid-task (OOM, SIGKILL) puts its message back instead of acknowledging it.
        task_reject_on_worker_lost=True,
        # Reserve one message at a time: a job waiting behind a 10-hour job could run on an idle worker.
        worker_prefetch_multiplier=1,
        # One task at a time per worker, and one worker per GPU: two trainings on one GPU would fight for memory.
        worker_concurrency=1,
        # A fresh child per task: GPU memory goes back to the driver and torch/CUDA start clean in the child.
        worker_max_tasks_per_child=1,
        # Prefork, but a finished child is replaced within 0.5 s rather than 5 s (see jobs/execution/pool.py).
        worker_pool="jobs.execution.pool:TaskPool",
        # Redis redelivers unacknowledged messages after this; it must outlast the longest allowed job.
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        # No STARTED state: a duplicate delivery would write it over the finished job's result (same task id).
        # Running jobs report PROGRESS instead (jobs/execution/tasks.py), which Flower and AsyncResult show.
        task_track_started=False,
        result_extended=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # A job's prints go to the terminal and to its own log (jobs/execution/joblog.py), not through Celery's logger.
        worker_redirect_stdouts=False,
        task_queues=(Queue(GPU_QUEUE), Queue(CPU_QUEUE)),
        task_default_queue=CPU_QUEUE,
        task_routes={stage.value: {"queue": queue_for(stage)} for stage in Stage},
    )
    return app


def declare_queues(app: Celery, extra: Iterable[str] = ()) -> None:
    """Create the queues (and their exchange bindings) before first use, so a message sent before any
    worker listened is routed, not dropped."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
        channel = connection.default_channel
        for queue in [*app.conf.task_queues, *(Queue(name) for name in extra)]:
            queue(channel).declare()


def ensure_broker(settings: Settings | None = None) -> None:
    """Before the first use of the broker: refuse one that is not Redis (UnsupportedBroker), and start the
    project's local Redis when the settings use it (no CELERY_BROKER_URL)."""
    settings = settings or get_settings()
    _require_redis("CELERY_BROKER_URL", settings.broker)
    _require_redis("CELERY_RESULT_BACKEND", settings.result_backend)
    local = localbroker.configured(settings)
    if local is not None:
        localbroker.ensure_running(local)


_create_cached = lru_cache(maxsize=8)(create_app)


def app_for(settings: Settings | None = None) -> Celery:
    """An app for sending messages with the current settings."""
    settings = settings or get_settings()
    return _create_cached(settings.broker, settings.result_backend)


app = app_for()
app.conf.include = ["jobs.execution.tasks"]
