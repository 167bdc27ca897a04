"""Submitting and cancelling: a request is validated (config, params, every file and model it names), recorded
as a QUEUED row and sent to the broker; a comparison or a sweep becomes a parent and its children
(jobs/pipelines/). A finished run whose files the bucket did not take is queued again to publish them.

Nothing here imports torch: configs are validated with the torch-free worker.config, and jobs run
elsewhere (a Celery worker, or `jobs run` through jobs.execution.runner).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from db.models import Experiment, Job, utcnow
from jobs.broker import queue
from jobs.broker.queue import BrokerUnavailable
from jobs.core import storage
from jobs.core.checkpoint_kinds import WrongCheckpointKind, check_checkpoint_kinds
from jobs.core.database import retry_write, transaction
from jobs.core.locations import LocationRefused, check_inputs_exist, check_job_inputs, config_file
from jobs.core.schemas import JobState, JobView, SubmitRequest
from jobs.core.stages import ORCHESTRATED_STAGES, Stage
from jobs.core.text import unstorable_texts
from jobs.core.views import job_view
from jobs.execution import unpublished
from jobs.execution.claim import max_time_s
from jobs.execution.resumption import EarlierJobActive, resumable_job
from jobs.pipelines.grid import GridError
from jobs.pipelines.launch import run_compare_inline, submit_compare
from jobs.pipelines.plan import parent_params, plan_runs
from jobs.pipelines.settle import settle_parent
from jobs.service.errors import IdempotencyConflict, InvalidRequest, JobNotFound
from jobs.service.queries import get_job, job_options

# The stages `--resume` continues an earlier job of (they train from a last.ckpt).
RESUMABLE_STAGES = {Stage.train, Stage.train_full}


def validate(request: SubmitRequest, *, runs_here: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved config and the stage's params, or InvalidRequest naming what is wrong.

    Every file and model the job would open is checked against the allowed roots here, whichever way it
    came in (a preset, a config file, an override, a param); the params come back with absolute paths.
    `runs_here` (`jobs run`): this host runs the job, so an input that does not exist is refused now too.
    """
    from worker.config import ConfigError, load_config  # torch-free; lazy keeps `jobs --help` fast

    try:
        params = request.params.for_stage(request.stage)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        config_path = config_file(request.config_path) if request.config_path else None
        config = load_config(request.preset, request.overrides, config_path)
        params = check_job_inputs(config, params)
        if runs_here:
            check_inputs_exist(config, params)
        if method := check_checkpoint_kinds(request.stage, params):
            # A stage that reads a checkpoint runs its PEFT method, whatever the preset says: the row says so too.
            config = config.model_copy(update={"peft": config.peft.model_copy(update={"method": method})})
    except (LocationRefused, WrongCheckpointKind) as exc:
        raise InvalidRequest(str(exc), field=exc.key) from None
    except ConfigError as exc:
        raise InvalidRequest(str(exc)) from None
    config_dict = config.to_dict()
    for key, problem in unstorable_texts(config_dict):
        raise InvalidRequest(f"{key}: {problem}", field=key)
    if config.train.resume and request.stage in RESUMABLE_STAGES:
        try:
            resumable_job(request.stage.value, config_dict)
        except EarlierJobActive as exc:
            raise InvalidRequest(str(exc), field="train.resume") from None
    return config_dict, params


def _recorded_request(request: SubmitRequest, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a job row keeps of its request: the request without its params, and the stage's params."""
    return request.model_dump(mode="json", exclude={"params"}), params


def _same_key_job(request: SubmitRequest, params: dict[str, Any]) -> JobView | None:
    """The job an earlier submit with this idempotency key made; IdempotencyConflict if its request differed."""
    if not request.idempotency_key:
        return None
    with transaction() as session:
        job = session.scalars(
            select(Job).where(Job.idempotency_key == request.idempotency_key).options(*job_options())
        ).first()
        if job is None:
            return None
        view = job_view(job)
        # "after" is the job system's own note on the row (create_job), not part of what was asked.
        asked = {key: value for key, value in (job.request or {}).items() if key != "after"}
        same = (asked, job.params) == _recorded_request(request, params)
    if not same:
        raise IdempotencyConflict(request.idempotency_key, view)
    return view


def create_job(
    request: SubmitRequest, *, task_id: str | None = None, after: list[int] | None = None, runs_here: bool = False
) -> tuple[JobView, bool]:
    """Validate and insert a QUEUED job; returns (job, created). An existing idempotency key returns its job.

    `after` declares when the job's message should exist: [] as soon as it is submitted, or once those jobs
    have ended. The sweep sends again a declared job whose message went missing (jobs/execution/recovery.py); a job
    without it belongs to a canvas of the caller's, which alone knows when it runs.
    """
    config, params = validate(request, runs_here=runs_here)
    if (existing := _same_key_job(request, params)) is not None:
        return existing, False
    recorded, _ = _recorded_request(request, params)
    try:
        with transaction() as session:
            if request.parent_id is not None and session.get(Job, request.parent_id) is None:
                raise InvalidRequest(f"parent_id: no job {request.parent_id}; pass an existing job id")
            job = Job(
                stage=request.stage.value,
                params=params,
                request={**recorded, **({"after": after} if after is not None else {})},
                config=config,
                state=JobState.QUEUED.value,
                celery_task_id=task_id,
                parent_id=request.parent_id,
                idempotency_key=request.idempotency_key,
            )
            session.add(job)
            session.flush()
            job_id = job.id
    except IntegrityError:
        # Two submits with one key raced; the other insert won.
        if (existing := _same_key_job(request, params)) is not None:
            return existing, False
        raise
    return get_job(job_id), True


def submit(request: SubmitRequest) -> JobView:
    """Record the job and enqueue it; the same idempotency key returns the first job, enqueued once. With an
    artifacts bucket, one that cannot be used refuses the submission (StorageError), before any row exists."""
    if (store := storage.bucket()) is not None:
        store.check()
    if request.stage in ORCHESTRATED_STAGES:
        return _submit_comparison(request)
    task_id = str(uuid.uuid4())
    job, created = create_job(request, task_id=task_id, after=[])
    if not created:
        return job
    try:
        queue.enqueue(job.id, Stage(job.stage), task_id, max_time_s(job.config), request.gpu_class)
    except BrokerUnavailable as exc:
        _finish_unqueued(job.id, JobState.FAILED, str(exc))
        raise
    return job


def validate_runs(request: SubmitRequest) -> tuple[dict[str, Any], list[Any]]:
    """A comparison's or sweep's config and its runs (jobs.pipelines.grid.Run), or InvalidRequest naming what
    is wrong."""
    from worker.config import RunConfig
    from worker.report.metrics import find_measure  # torch-free, like worker.config

    config, _ = validate(request)
    if request.params.metric is not None:
        try:
            find_measure(request.params.metric)
        except KeyError as exc:
            raise InvalidRequest(f"metric: {exc.args[0]}") from None
    try:
        runs = plan_runs(request, config)
    except GridError as exc:
        raise InvalidRequest(str(exc)) from None
    grid = request.params.grid or {}
    for run in runs:  # a grid value names a file or a model like an override does: the same rule
        try:
            check_job_inputs(RunConfig.model_validate(run.config), {})
        except LocationRefused as exc:
            field = exc.key
            if exc.key in grid:  # the grid value that brought it: params.grid.<key>.<index>
                field = f"params.grid.{exc.key}.{grid[exc.key].index(str(run.cell[exc.key]))}"
            raise InvalidRequest(f"grid: {exc}", field=field) from None
    return config, runs


def _submit_comparison(request: SubmitRequest) -> JobView:
    """A comparison or a sweep is a parent row plus a canvas of child jobs (jobs/pipelines/)."""
    config, runs = validate_runs(request)
    params = parent_params(request, runs, with_generation=request.params.with_generation)
    if (existing := _same_key_job(request, params)) is not None:
        return existing
    return get_job(submit_compare(request, config, runs))


def run_comparison_inline(request: SubmitRequest) -> JobView:
    """`jobs run compare` (or sweep): every child in this process, one after another (no broker)."""
    config, runs = validate_runs(request)
    return get_job(run_compare_inline(request, config, runs))


def _finish_unqueued(job_id: int, state: JobState, error: str | None) -> None:
    with transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=state.value, error=error, finished_at=utcnow())
        )


@retry_write
def cancel(job_id: int) -> JobView:
    """A queued job ends CANCELLED now (its message revoked); a running one is asked to stop at its next step.

    Cancelling a finished job changes nothing. A comparison's children are cancelled with it.
    """
    with transaction() as session:
        job = session.get(Job, job_id, options=job_options())
        if job is None:
            raise JobNotFound(f"no job {job_id}; `jobs list` shows the jobs")
        ids = [job_id, *(child.id for child in job.children)]
        task_ids = [t for t in [job.celery_task_id, *(c.celery_task_id for c in job.children)] if t]
        now = utcnow()
        # Conditional updates: a worker claiming the job at the same moment either sees CANCELLED or the flag.
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.state == JobState.QUEUED.value)
            .values(state=JobState.CANCELLED.value, cancel_requested=True, finished_at=now, error="cancelled")
        )
        session.execute(
            update(Job).where(Job.id.in_(ids), Job.state == JobState.RUNNING.value).values(cancel_requested=True)
        )
    for task_id in task_ids:
        queue.revoke(task_id)
    if job.stage in ORCHESTRATED_STAGES:
        # No worker runs the parent itself, so nothing else would end it.
        settle_parent(job_id, JobState.CANCELLED, "cancelled")
    return get_job(job_id)


def publish(job_id: int) -> JobView:
    """Queue again a job whose run finished but whose files the bucket did not take (its error starts with
    "publish pending"): the worker that claims it uploads them and records the result without training. With
    the bucket still away this refuses at once (StorageError); any other job is refused (InvalidRequest)."""
    if (store := storage.bucket()) is not None:
        store.check()
    task_id = str(uuid.uuid4())
    stage, limit_s, gpu_class, error = _requeue_unpublished(job_id, task_id)
    try:
        queue.enqueue(job_id, stage, task_id, limit_s, gpu_class)
    except BrokerUnavailable:
        _finish_unqueued(job_id, JobState.FAILED, error)  # still publish-pending, as it was
        raise
    return get_job(job_id)


@retry_write
def _requeue_unpublished(job_id: int, task_id: str) -> tuple[Stage, int, str | None, str | None]:
    """Flip the job row from FAILED (publish pending) to QUEUED; returns what its message needs (stage, time
    limit, GPU class) and the error it had."""
    with transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}; `jobs list` shows the jobs")
        if job.state != JobState.FAILED.value or not unpublished.pending(session, job_id):
            status = session.scalar(select(Experiment.status).where(Experiment.job_id == job_id))
            raise InvalidRequest(
                f"job {job_id} has no publish pending (it is {job.state}, its run {status or 'never started'}): "
                "only a job whose error starts with 'publish pending' is published again"
            )
        sent = (Stage(job.stage), max_time_s(job.config), (job.request or {}).get("gpu_class"), job.error)
        flipped = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.FAILED.value, Job.attempts == job.attempts)
            .values(state=JobState.QUEUED.value, error=None, finished_at=None, celery_task_id=task_id)
        ).rowcount
        if flipped != 1:
            raise InvalidRequest(f"job {job_id} changed while it was queued again; see `jobs status {job_id}`")
        return sent
