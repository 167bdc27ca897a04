"""The job service: what the CLI and the HTTP API call. Raises the errors below, never HTTP errors.

Nothing here imports torch: configs are validated with the torch-free worker.config, and jobs run
elsewhere (a Celery worker, or `jobs run` through jobs.runner).
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from db.models import Experiment, Job, Metric, utcnow
from jobs import queue
from jobs.claim import max_time_s
from jobs.database import engine, retry_write, transaction
from jobs.locations import LocationRefused, check_job_inputs, config_file
from jobs.queue import BrokerUnavailable
from jobs.schemas import ExperimentView, JobState, JobView, MetricView, SubmitRequest
from jobs.stages import ORCHESTRATED_STAGES, Stage
from jobs.text import unstorable_texts
from jobs.views import experiment_view, job_log_path, job_view, metric_view

__all__ = [
    "BrokerUnavailable",
    "ExperimentNotFound",
    "IdempotencyConflict",
    "InvalidRequest",
    "JobNotFound",
    "cancel",
    "create_job",
    "experiment_metrics",
    "get_experiment",
    "get_job",
    "health",
    "latest_report_job",
    "list_experiments",
    "list_jobs",
    "read_logs",
    "submit",
    "validate_runs",
]


class JobNotFound(LookupError):
    """No job with that id."""


class ExperimentNotFound(LookupError):
    """No experiment with that id."""


class InvalidRequest(ValueError):
    """The request cannot run; the message names the field and the fix. `field` is the dotted config key or
    request field at fault (`params.checkpoint`, `model.siglip`, `config`), when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class IdempotencyConflict(ValueError):
    """The idempotency key was first used for another request; `job_id` is the job it made."""

    def __init__(self, key: str, job: JobView):
        super().__init__(
            f"idempotency key {key!r} was first used for job {job.id} (a {job.stage} job) with a different "
            f"request; repeat that request exactly to get job {job.id} again, or use a new key"
        )
        self.job_id = job.id


def _job_options():  # type: ignore[no-untyped-def]
    return (selectinload(Job.children).selectinload(Job.experiments), selectinload(Job.experiments))


def validate(request: SubmitRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved config and the stage's params, or InvalidRequest naming what is wrong.

    Every file and model the job would open is checked against the allowed roots here, whichever way it
    came in (a preset, a config file, an override, a param); the params come back with absolute paths.
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
    except LocationRefused as exc:
        raise InvalidRequest(str(exc), field=exc.key) from None
    except ConfigError as exc:
        raise InvalidRequest(str(exc)) from None
    config_dict = config.to_dict()
    for key, problem in unstorable_texts(config_dict):
        raise InvalidRequest(f"{key}: {problem}", field=key)
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
            select(Job).where(Job.idempotency_key == request.idempotency_key).options(*_job_options())
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
    request: SubmitRequest, *, task_id: str | None = None, after: list[int] | None = None
) -> tuple[JobView, bool]:
    """Validate and insert a QUEUED job; returns (job, created). An existing idempotency key returns its job.

    `after` declares when the job's message should exist: [] as soon as it is submitted, or once those jobs
    have ended. The sweep sends again a declared job whose message went missing (jobs/recovery.py); a job
    without it belongs to a canvas of the caller's, which alone knows when it runs.
    """
    config, params = validate(request)
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
    """Record the job and enqueue it; the same idempotency key returns the first job, enqueued once."""
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
    """A comparison's or sweep's config and its runs (jobs.grid.Run), or InvalidRequest naming what is wrong."""
    from jobs.compare import plan_runs
    from jobs.grid import GridError
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
    """A comparison or a sweep is a parent row plus a canvas of child jobs (jobs/compare.py)."""
    from jobs.compare import parent_params, submit_compare

    config, runs = validate_runs(request)
    params = parent_params(request, runs, with_generation=request.params.with_generation)
    if (existing := _same_key_job(request, params)) is not None:
        return existing
    return submit_compare(request, config, runs)


def _finish_unqueued(job_id: int, state: JobState, error: str | None) -> None:
    with transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=state.value, error=error, finished_at=utcnow())
        )


def get_job(job_id: int) -> JobView:
    with transaction() as session:
        job = session.get(Job, job_id, options=_job_options())
        if job is None:
            raise JobNotFound(f"no job {job_id}; `jobs list` shows the jobs")
        return job_view(job)


def list_jobs(state: JobState | None = None, limit: int = 50) -> list[JobView]:
    """Newest first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit).options(selectinload(Job.experiments))
    if state is not None:
        query = query.where(Job.state == JobState(state).value)
    with transaction() as session:
        return [job_view(job, with_children=False) for job in session.scalars(query)]


@retry_write
def cancel(job_id: int) -> JobView:
    """A queued job ends CANCELLED now (its message revoked); a running one is asked to stop at its next step.

    Cancelling a finished job changes nothing. A comparison's children are cancelled with it.
    """
    with transaction() as session:
        job = session.get(Job, job_id, options=_job_options())
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
        from jobs.compare import settle_parent

        settle_parent(job_id, JobState.CANCELLED, "cancelled")
    return get_job(job_id)


def latest_report_job() -> JobView:
    """The newest report job that succeeded; JobNotFound when there is none yet."""
    query = (
        select(Job.id)
        .where(Job.stage == Stage.report.value, Job.state == JobState.SUCCEEDED.value)
        .order_by(Job.id.desc())
        .limit(1)
    )
    with transaction() as session:
        job_id = session.scalar(query)
    if job_id is None:
        raise JobNotFound("no report yet: `jobs submit compare` (or `jobs submit report`) makes one")
    return get_job(job_id)


def read_logs(job_id: int, tail_lines: int | None = None) -> str:
    """The job's captured log (stage logging and Lightning output); empty before the job starts."""
    get_job(job_id)
    path = job_log_path(job_id)
    if not path.exists():
        return ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        if tail_lines is None:
            return handle.read()
        return "".join(deque(handle, maxlen=tail_lines))


def list_experiments(stage: str | None = None, peft: str | None = None, limit: int = 50) -> list[ExperimentView]:
    """Newest first, optionally one stage and one PEFT method."""
    query = select(Experiment).order_by(Experiment.id.desc()).limit(limit)
    if stage:
        query = query.where(Experiment.stage == stage)
    if peft:
        query = query.where(Experiment.peft_method == peft)
    with transaction() as session:
        return [experiment_view(experiment) for experiment in session.scalars(query)]


def get_experiment(experiment_id: int) -> ExperimentView:
    with transaction() as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise ExperimentNotFound(f"no experiment {experiment_id}; `jobs results` lists them")
        return experiment_view(experiment)


def experiment_metrics(experiment_id: int) -> list[MetricView]:
    """Every recorded value of one experiment, by split, name, epoch and step."""
    get_experiment(experiment_id)
    query = (
        select(Metric)
        .where(Metric.experiment_id == experiment_id)
        .order_by(Metric.split, Metric.name, Metric.epoch, Metric.step)
    )
    with transaction() as session:
        return [metric_view(metric) for metric in session.scalars(query)]


def health() -> dict[str, str]:
    """Whether the database and the broker answer."""
    try:
        with engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"error: {exc.__class__.__name__}: {exc}"
    return {"database": database, "broker": queue.broker_health()}
