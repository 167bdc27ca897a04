"""Starting a planned comparison or sweep: as a Celery canvas for the workers, or inline in this process
(`jobs run compare`). Both return the parent's id; the caller reads its row.

    prepare(s) -> group(one chain per run: train [-> train-full -> evaluate]) -> report

Celery turns a group followed by a task into a chord, so the report runs once every branch has ended.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import chain, group
from sqlalchemy import select

from db.models import Job
from jobs.broker import queue
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage
from jobs.execution.claim import WorkerIdentity, max_time_s
from jobs.execution.runner import execute_job
from jobs.pipelines.grid import Run
from jobs.pipelines.plan import ComparePlan, create_plan
from jobs.pipelines.settle import fail_queued_children, parent_finished, settle_parent

log = logging.getLogger(__name__)


def canvas(plan: ComparePlan, gpu_class: str | None = None) -> Any:
    """prepare(s) -> group(branch per run) -> report, each step the child job's own message."""
    with transaction() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(plan.child_ids())))}
        steps = {job_id: (job.celery_task_id, max_time_s(job.config)) for job_id, job in jobs.items()}

    def step(stage: Stage, job_id: int) -> Any:
        task_id, limit = steps[job_id]
        return queue.stage_signature(job_id, stage, task_id, limit, gpu_class)

    branches = [chain(*(step(stage, job_id) for stage, job_id in branch.steps)) for branch in plan.branches]
    prepares = [step(Stage.prepare_data, job_id) for job_id in plan.prepare_ids]
    return chain(*prepares, group(branches), step(Stage.report, plan.report_id))


def submit_compare(request: SubmitRequest, config: dict[str, Any], runs: list[Run]) -> int:
    """Create the rows of a comparison or sweep and send its canvas; returns the parent's id. A broker
    failure fails the parent and its children (BrokerUnavailable)."""
    plan = create_plan(request, config, runs, with_generation=request.params.with_generation)
    try:
        canvas(plan, request.gpu_class).apply_async()
    except Exception as exc:  # kombu raises transport-specific errors
        error = f"broker did not accept the {'sweep' if request.stage is Stage.sweep else 'comparison'}: {exc}"
        settle_parent(plan.parent_id, JobState.FAILED, error)
        fail_queued_children(plan.parent_id, error)
        raise queue.BrokerUnavailable(error) from exc
    log.info("%s %s queued with children %s", request.stage.value, plan.parent_id, plan.child_ids())
    return plan.parent_id


def run_compare_inline(request: SubmitRequest, config: dict[str, Any], runs: list[Run]) -> int:
    """`jobs run compare` (or sweep): the same rows, run one after another in this process (no broker);
    returns the parent's id."""
    plan = create_plan(request, config, runs, with_generation=request.params.with_generation)
    worker = WorkerIdentity.current()
    for job_id in plan.child_ids():
        if parent_finished(plan.parent_id):  # cancelled meanwhile
            break
        execute_job(job_id, worker)
    return plan.parent_id
