"""One Celery task per stage (named after it), and the worker's stale-job sweep.

A task only carries a job id; the job row holds the config and params, and the runner decides from the
row whether this delivery should run at all (see jobs/execution/claim.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, bootsteps
from celery.exceptions import Ignore
from celery.signals import worker_process_init

from jobs.broker.celery_app import app
from jobs.core.database import dispose_engines
from jobs.core.schemas import JobState
from jobs.core.settings import get_settings
from jobs.core.stages import Stage
from jobs.execution.claim import WorkerIdentity, sweep_stale_jobs
from jobs.execution.recovery import requeue_lost_jobs, settle_finished_parents

log = logging.getLogger(__name__)


# The parts of a message that place it in a canvas, kept so a re-queued job continues its chain or chord.
CANVAS_OPTIONS = (
    "task_id", "root_id", "parent_id", "group_id", "group_index", "chord", "chain", "link", "link_error",
    "soft_time_limit", "time_limit",
)  # fmt: skip


def delivery_of(request: Any) -> dict[str, Any]:
    """The message a task is running, as JSON: what `jobs.broker.queue.resend` sends again."""
    options = {k: v for k, v in request.as_execution_options().items() if k in CANVAS_OPTIONS and v is not None}
    queue = (request.delivery_info or {}).get("routing_key")
    if queue:
        options["queue"] = queue
    return {"task": request.task, "args": list(request.args), "kwargs": dict(request.kwargs), "options": options}


def _make_task(stage: Stage) -> Task:
    def run_stage(self: Task, job_id: int) -> dict[str, Any]:
        from jobs.execution.runner import execute_job

        def report(progress: dict[str, Any]) -> None:
            # AsyncResult.info and the result backend get the numbers; Flower, which follows events, gets a
            # task-progress event whose result field it shows as the task's state PROGRESS and its result.
            # The job row has the same numbers for the CLI and the API.
            meta = {"job_id": job_id, **progress}
            self.update_state(state="PROGRESS", meta=meta)
            self.send_event("task-progress", name=self.name, result=json.dumps(meta))

        outcome = execute_job(job_id, WorkerIdentity.current(), on_progress=report, delivery=delivery_of(self.request))
        if not outcome.ran and outcome.state is not JobState.CANCELLED:
            # A duplicate (the job runs elsewhere, or already ran): store no state under this task id and
            # trigger no chain step or chord part, or a canvas would move on before (or twice after) the job.
            raise Ignore()
        return outcome.to_dict()

    run_stage.__name__ = f"run_{stage.name}"
    run_stage.__doc__ = f"Run job <job_id> of stage '{stage.value}'."
    return app.task(name=stage.value, bind=True)(run_stage)


STAGE_TASKS: dict[Stage, Task] = {stage: _make_task(stage) for stage in Stage}


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked child must not share the parent's pooled database sockets.
    dispose_engines()


def _sweep() -> None:
    """Each repair on its own: one failing (the database or the broker away) must not skip the others,
    nor take the worker down; the next sweep tries again."""
    for repair in (sweep_stale_jobs, requeue_lost_jobs, settle_finished_parents):
        try:
            repaired = repair()
        except Exception:
            log.exception("sweep step %s failed", repair.__name__)
            continue
        if repaired:
            log.warning("sweep step %s repaired jobs %s", repair.__name__, repaired)


class StaleJobSweep(bootsteps.StartStopStep):
    """At worker start and every JOBS_SWEEP_INTERVAL_S: re-queue RUNNING jobs whose worker died, send again
    QUEUED jobs whose message was lost, and settle parents whose children have all ended.

    Runs on the worker's timer in the main process, not in a thread of its own, so forking children
    never copies a thread that holds a lock.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        _sweep()
        self.tref = parent.timer.call_repeatedly(get_settings().sweep_interval_s, _sweep, priority=10)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


app.steps["worker"].add(StaleJobSweep)
