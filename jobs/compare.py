"""Comparisons and sweeps: one parent, children for each step, and a Celery canvas that runs them.

    prepare-data [-> prepare-data ...] -> ( train run 1 [-> train-full -> evaluate] )  -> report
                                          ( train run 2 [-> train-full -> evaluate] )
                                          ...

A sweep runs every combination of its grid (jobs/grid.py) with every seed; a comparison is the sweep over
``peft.method = lora, qlora``. There is one prepare-data child per distinct data setup (the split follows the
seed), run one after another before the branches. The branches run in parallel where workers are free; the
report is the chord's callback. Every child is an ordinary job row (parent_id = the comparison), so it is
claimed, heartbeated, recorded and cancelled like any other. A child that needs an earlier child's output
names it as ``job:<id>`` in its params; the runner resolves that to the earlier job's checkpoint when the
child starts (resolve_job_refs).

The parent is not run by a worker: it is RUNNING from submission until its report job settles it
(settle_parent), and the stale-job sweep leaves it alone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from db.models import Experiment, Job, utcnow
from jobs.database import transaction
from jobs.grid import Run
from jobs.schemas import JobState, JobView, SubmitRequest
from jobs.stages import Stage

log = logging.getLogger(__name__)

JOB_REF = "job:"


class JobRefError(ValueError):
    """A child's input job did not produce what the child needs."""


@dataclass
class Branch:
    """One run of the sweep (a grid point and a seed) and its chain of child jobs."""

    cell: dict[str, Any]
    seed: int
    steps: list[tuple[Stage, int]] = field(default_factory=list)  # [(stage, job id)] in order


@dataclass
class ComparePlan:
    """The parent's id and its children's ids, in the shape of the canvas."""

    parent_id: int
    prepare_ids: list[int] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    report_id: int = 0

    def child_ids(self) -> list[int]:
        branch_ids = [job_id for branch in self.branches for _, job_id in branch.steps]
        return [*self.prepare_ids, *branch_ids, self.report_id]

    def branch(self, **cell: Any) -> Branch:
        """The first branch whose grid point has these values, e.g. plan.branch(**{"peft.method": "lora"})."""
        return next(b for b in self.branches if all(b.cell.get(k) == v for k, v in cell.items()))


def _child(
    session: Any, parent: Job, stage: Stage, params: dict[str, Any], config: dict[str, Any], after: list[int]
) -> int:
    """A QUEUED child row. `after` names the jobs it waits for in the canvas: the sweep (jobs/recovery.py)
    sends a child whose message was lost once those have ended."""
    job = Job(
        stage=stage.value,
        params=params,
        request={"stage": stage.value, "parent_id": parent.id, "after": after},
        config=config,
        state=JobState.QUEUED.value,
        celery_task_id=str(uuid.uuid4()),
        parent_id=parent.id,
    )
    session.add(job)
    session.flush()
    return job.id


def parent_params(request: SubmitRequest, runs: list[Run], *, with_generation: bool) -> dict[str, Any]:
    """What the parent row keeps of what ran, for the report: the grid's keys in order and the seeds,
    whatever flags asked for them."""
    return request.params.for_stage(request.stage) | {
        "with_generation": with_generation,
        "grid": {key: list(dict.fromkeys(str(run.cell[key]) for run in runs)) for key in runs[0].cell},
        "seed_list": list(dict.fromkeys(run.seed for run in runs)),
    }


def create_plan(
    request: SubmitRequest, config: dict[str, Any], runs: list[Run], *, with_generation: bool
) -> ComparePlan:
    """Insert the parent (RUNNING) and every child (QUEUED) in one transaction.

    Each branch's config is its run's: the parent's config with the grid point and the seed set, so data,
    seed and hyperparameters differ between branches only where the grid or the seeds say so.
    """
    with transaction() as session:
        parent = Job(
            stage=request.stage.value,
            params=parent_params(request, runs, with_generation=with_generation),
            request=request.model_dump(mode="json", exclude={"params"}),
            config=config,
            state=JobState.RUNNING.value,
            started_at=utcnow(),
            idempotency_key=request.idempotency_key,
        )
        session.add(parent)
        session.flush()
        # `after` mirrors the canvas below: the prepares one after another, every branch after all of them,
        # the report after everything.
        plan = ComparePlan(parent_id=parent.id)
        prepared: dict[str, int] = {}
        for run in runs:
            if run.data_key() not in prepared:
                after = list(prepared.values())[-1:]
                prepared[run.data_key()] = _child(session, parent, Stage.prepare_data, {}, run.config, after=after)
        plan.prepare_ids = list(prepared.values())
        for run in runs:
            branch = Branch(cell=run.cell, seed=run.seed)
            train_id = _child(session, parent, Stage.train, {}, run.config, after=plan.prepare_ids)
            branch.steps.append((Stage.train, train_id))
            if with_generation:
                full_params = {"siglip_checkpoint": f"{JOB_REF}{train_id}"}
                full_id = _child(session, parent, Stage.train_full, full_params, run.config, after=[train_id])
                eval_params = {"checkpoint": f"{JOB_REF}{full_id}", "split": "test"}
                eval_id = _child(session, parent, Stage.evaluate, eval_params, run.config, after=[full_id])
                branch.steps += [(Stage.train_full, full_id), (Stage.evaluate, eval_id)]
            plan.branches.append(branch)
        branch_ids = [job_id for branch in plan.branches for _, job_id in branch.steps]
        plan.report_id = _child(
            session, parent, Stage.report, {"compare_job": parent.id}, config, after=[*plan.prepare_ids, *branch_ids]
        )
    return plan


def canvas(plan: ComparePlan, gpu_class: str | None = None) -> Any:
    """prepare(s) -> group(branch per run) -> report: Celery turns a group followed by a task into a chord."""
    from celery import chain, group

    from jobs.claim import max_time_s
    from jobs.queue import stage_signature

    with transaction() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(plan.child_ids())))}
        steps = {job_id: (job.celery_task_id, max_time_s(job.config)) for job_id, job in jobs.items()}

    def step(stage: Stage, job_id: int) -> Any:
        task_id, limit = steps[job_id]
        return stage_signature(job_id, stage, task_id, limit, gpu_class)

    branches = [chain(*(step(stage, job_id) for stage, job_id in branch.steps)) for branch in plan.branches]
    prepares = [step(Stage.prepare_data, job_id) for job_id in plan.prepare_ids]
    return chain(*prepares, group(branches), step(Stage.report, plan.report_id))


def plan_runs(request: SubmitRequest, config: dict[str, Any]) -> list[Run]:
    """The runs a compare or sweep request asks for; GridError names a bad key, value or size."""
    from jobs.grid import expand, grid_for

    seeds = request.params.seed_values(int(config["seed"]))
    return expand(
        grid_for(request.stage, request.params),
        seeds,
        preset=request.preset,
        overrides=request.overrides,
        config_path=request.config_path,
    )


def submit_compare(request: SubmitRequest, config: dict[str, Any], runs: list[Run]) -> JobView:
    """Create the rows of a comparison or sweep and send its canvas; a broker failure fails the parent and
    its children."""
    from jobs import queue
    from jobs.service import get_job

    plan = create_plan(request, config, runs, with_generation=request.params.with_generation)
    try:
        with queue.publishing():
            canvas(plan, request.gpu_class).apply_async()
    except Exception as exc:  # kombu raises transport-specific errors
        error = f"broker did not accept the {'sweep' if request.stage is Stage.sweep else 'comparison'}: {exc}"
        settle_parent(plan.parent_id, JobState.FAILED, error)
        _fail_queued_children(plan.parent_id, error)
        raise queue.BrokerUnavailable(error) from exc
    log.info("%s %s queued with children %s", request.stage.value, plan.parent_id, plan.child_ids())
    return get_job(plan.parent_id)


def run_compare_inline(request: SubmitRequest, config: dict[str, Any], runs: list[Run]) -> JobView:
    """`jobs run compare` (or sweep): the same rows, run one after another in this process (no broker)."""
    from jobs.claim import WorkerIdentity
    from jobs.runner import execute_job
    from jobs.service import get_job

    plan = create_plan(request, config, runs, with_generation=request.params.with_generation)
    worker = WorkerIdentity.current()
    for job_id in plan.child_ids():
        if get_job(plan.parent_id).state.finished:  # cancelled meanwhile
            break
        execute_job(job_id, worker)
    return get_job(plan.parent_id)


def resolve_job_refs(params: dict[str, Any]) -> dict[str, Any]:
    """Replace ``job:<id>`` values by that job's checkpoint; a job that did not succeed is a JobRefError."""
    resolved = dict(params)
    for name, value in params.items():
        if isinstance(value, str) and value.startswith(JOB_REF):
            resolved[name] = _checkpoint_of(int(value.removeprefix(JOB_REF)), name)
    return resolved


def _checkpoint_of(job_id: int, param: str) -> str:
    with transaction() as session:
        job = session.get(Job, job_id)
        checkpoint = session.scalar(
            select(Experiment.checkpoint_path).where(Experiment.job_id == job_id).order_by(Experiment.id.desc())
        )
        state, error = (job.state, job.error) if job else (None, None)
    if state != JobState.SUCCEEDED.value:
        reason = f": {error.splitlines()[0]}" if error else ""
        raise JobRefError(f"{param}: input job {job_id} ended {state}{reason}; nothing to continue from")
    if not checkpoint:
        raise JobRefError(f"{param}: input job {job_id} succeeded but recorded no checkpoint")
    return checkpoint


def settle_parent(parent_id: int, state: JobState, error: str | None = None, artifacts: dict | None = None) -> None:
    """Give the comparison its final state (called by its report job, or when it could not be queued)."""
    values: dict[str, Any] = {"state": state.value, "finished_at": utcnow(), "error": error}
    if artifacts is not None:
        values["artifacts"] = artifacts
    with transaction() as session:
        session.execute(
            update(Job).where(Job.id == parent_id, Job.state == JobState.RUNNING.value).values(**values)
        )


def _fail_queued_children(parent_id: int, error: str) -> None:
    with transaction() as session:
        session.execute(
            update(Job)
            .where(Job.parent_id == parent_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.FAILED.value, error=error, finished_at=utcnow())
        )
