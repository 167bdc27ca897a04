"""Database rows to the service's pydantic views."""

from __future__ import annotations

import math
from pathlib import Path

from db.models import NO_INDEX, Experiment, Job, Metric
from jobs.core.schemas import ExperimentView, JobState, JobView, MetricView
from jobs.core.settings import get_settings


def job_log_path(job_id: int) -> Path:
    return get_settings().logs_root / f"job-{job_id}.log"


def job_view(job: Job, *, with_children: bool = True) -> JobView:
    artifacts = {str(k): str(v) for k, v in (job.artifacts or {}).items()}
    if job.run_dir:
        artifacts.setdefault("run_dir", job.run_dir)
    log_path = job_log_path(job.id)
    if log_path.exists():
        artifacts.setdefault("log", str(log_path))
    return JobView(
        id=job.id,
        stage=job.stage,
        state=JobState(job.state),
        params=job.params or {},
        config=job.config,
        progress=job.progress,
        celery_task_id=job.celery_task_id,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        attempts=job.attempts,
        worker_host=job.worker_host,
        gpu_name=job.gpu_name,
        error=job.error,
        parent_id=job.parent_id,
        idempotency_key=job.idempotency_key,
        cancel_requested=job.cancel_requested,
        children=[job_view(child, with_children=False) for child in job.children] if with_children else [],
        experiment_ids=[experiment.id for experiment in job.experiments],
        artifacts=artifacts,
    )


def experiment_view(experiment: Experiment) -> ExperimentView:
    return ExperimentView(
        id=experiment.id,
        job_id=experiment.job_id,
        stage=experiment.stage,
        peft_method=experiment.peft_method,
        model_ids=experiment.model_ids or {},
        dataset=experiment.dataset,
        config_hash=experiment.config_hash,
        git_commit=experiment.git_commit,
        versions=experiment.versions or {},
        seed=experiment.seed,
        status=experiment.status,
        created_at=experiment.created_at,
        finished_at=experiment.finished_at,
        metrics=experiment.metrics or {},
        checkpoint_path=experiment.checkpoint_path,
        artifacts={str(k): str(v) for k, v in (experiment.artifacts or {}).items()},
    )


def metric_view(metric: Metric) -> MetricView:
    return MetricView(
        experiment_id=metric.experiment_id,
        split=metric.split,
        epoch=None if metric.epoch == NO_INDEX else metric.epoch,
        step=None if metric.step == NO_INDEX else metric.step,
        name=metric.name,
        value=math.nan if metric.value is None else metric.value,
    )
