"""Celery's Redis result backend without its result subscriptions.

Celery's Redis backend subscribes the sending process to a task's result channel whenever it might wait on
that result: at every send, and whenever a canvas is frozen (a comparison's chord builds a GroupResult whose
barrier subscribes to each branch, whatever `denied_join_result` says). Each AsyncResult unsubscribes from
its `__del__`, that is inside whatever the garbage collector interrupted, and when the broker has gone away
meanwhile it retries the connection there for 20 seconds and then raises. That froze API requests, and
on CPython 3.11.7 it broke an `ast.parse` the collector had interrupted (SystemError "AST constructor
recursion depth mismatch", CPython gh-106905: the failing finalizer's traceback was formatted inside it).

Nothing in this project waits on a task's result: the job row is the record, the result backend carries
PROGRESS for Flower and the chord counters. So no process subscribes; a result that is waited on anyway
(`AsyncResult.get()` while debugging) polls the stored state, as Celery's non-async backends do.
"""

from __future__ import annotations

from typing import Any

from celery.backends.base import SyncBackendMixin
from celery.backends.redis import RedisBackend


class PollingRedisBackend(SyncBackendMixin, RedisBackend):
    """RedisBackend that stores results and chord counters as usual and never subscribes to a result.

    SyncBackendMixin comes first: its add_pending_result and remove_pending_result (called by a frozen
    canvas's barrier and by AsyncResult.__del__) do nothing, and its waiting polls the stored meta.
    """

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        return {}  # send_task: Celery's backend would subscribe to the new task's channel here
