"""The worker's process pool: Celery's prefork pool, replacing a finished child within half a second.

Every job runs in a fresh child (max-tasks-per-child=1), so a child exits after each job. On brokers
with an event loop (Redis) Celery's pool notices that only on a 5-second timer, and each job waited
about 5 s for its child (bench/RESULTS.md, finding 2: start latency p50 5.0 s, 0.55 s at 0.5 s).
"""

from __future__ import annotations

from typing import Any

from celery.concurrency import prefork
from celery.concurrency.asynpool import AsynPool

CHILD_CHECK_INTERVAL_S = 0.5


class QuickReplaceAsynPool(AsynPool):
    @property
    def timers(self) -> dict[Any, float]:
        return {self.maintain_pool: CHILD_CHECK_INTERVAL_S}


class TaskPool(prefork.TaskPool):
    """`--pool=jobs.execution.pool:TaskPool` (Redis's event loop drives it)."""

    Pool = QuickReplaceAsynPool
