"""Reading jobs, experiments, metrics and logs back, as the service's views."""

from __future__ import annotations

from collections import deque

from sqlalchemy import select, text
from sqlalchemy.orm import selectinload

from db.models import Experiment, Job, Metric
from jobs.broker import queue
from jobs.core import storage
from jobs.core.database import engine, transaction
from jobs.core.schemas import ExperimentView, JobState, JobView, MetricView
from jobs.core.stages import Stage
from jobs.core.views import experiment_view, job_log_path, job_view, metric_view
from jobs.service.errors import ExperimentNotFound, JobNotFound


def job_options():  # type: ignore[no-untyped-def]
    return (selectinload(Job.children).selectinload(Job.experiments), selectinload(Job.experiments))


def get_job(job_id: int) -> JobView:
    with transaction() as session:
        job = session.get(Job, job_id, options=job_options())
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
    store = storage.bucket()
    if store is not None and (url := store.url_of(path)) is not None:
        # Written on another host: the bucket's copy, as of the job's last upload (a log this host is
        # writing is newer than the bucket's and stays as it is).
        store.fetch(url, missing_ok=True)
    if not path.exists():
        return ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        if tail_lines is None:
            return handle.read()
        return "".join(deque(handle, maxlen=tail_lines))


# `jobs results --sort`: the columns a user ranks runs by, each best first (a loss, a time or memory lowest).
SORTABLE = {
    "best_val_loss": Experiment.best_val_loss.asc(),
    "train_time_s": Experiment.train_time_s.asc(),
    "peak_gpu_mem_mb": Experiment.peak_gpu_mem_mb.asc(),
    "samples_per_s": Experiment.samples_per_s.desc(),
}


def list_experiments(
    stage: str | None = None, peft: str | None = None, limit: int = 50, sort: str | None = None
) -> list[ExperimentView]:
    """Newest first, or best first by a SORTABLE column (runs without a value last); optionally one stage and
    one PEFT method."""
    order = [SORTABLE[sort].nulls_last()] if sort else []
    query = select(Experiment).order_by(*order, Experiment.id.desc()).limit(limit)
    if sort:
        query = query.where(Experiment.status == "succeeded")
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


def experiment_metrics(experiment_id: int, name: str | None = None, split: str | None = None) -> list[MetricView]:
    """Every recorded value of one experiment, by split, name, epoch and step; optionally one name or split."""
    get_experiment(experiment_id)
    return _metrics([experiment_id], name, split)


def job_metrics(job_id: int, name: str | None = None, split: str | None = None) -> list[MetricView]:
    """Every recorded value of the job's experiments (a job is what users know by number); a comparison's or
    a sweep's, which runs none itself, are its children's."""
    job = get_job(job_id)
    ids = job.experiment_ids or [experiment for child in job.children for experiment in child.experiment_ids]
    return _metrics(ids, name, split)


def latest_metrics(job: JobView) -> list[MetricView]:
    """The last value of each split and name the job recorded (highest epoch, then step): where a run stands."""
    latest: dict[tuple[int, str, str], MetricView] = {}
    for row in _metrics(job.experiment_ids):  # ordered by epoch and step within a split and name
        latest[(row.experiment_id, row.split, row.name)] = row
    return list(latest.values())


def _metrics(experiment_ids: list[int], name: str | None = None, split: str | None = None) -> list[MetricView]:
    query = (
        select(Metric)
        .where(Metric.experiment_id.in_(experiment_ids))
        .order_by(Metric.experiment_id, Metric.split, Metric.name, Metric.epoch, Metric.step)
    )
    if name:
        query = query.where(Metric.name == name)
    if split:
        query = query.where(Metric.split == split)
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
