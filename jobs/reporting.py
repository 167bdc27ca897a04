"""The report stage: reads a comparison's rows from the database and hands them to worker.report.

It lives in `jobs` because it reads SQL; the rendering itself (worker/report) sees only plain dicts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from db.models import Experiment, Job, Metric
from jobs.compare import settle_parent
from jobs.database import transaction
from jobs.schemas import JobState
from jobs.stages import Stage

if TYPE_CHECKING:
    from worker.config import RunConfig
    from worker.recorder import Recorder
    from worker.result import StageResult

log = logging.getLogger(__name__)


class NoComparison(LookupError):
    """There is no comparison job to report on."""


def latest_compare_job() -> int:
    with transaction() as session:
        job_id = session.scalar(select(Job.id).where(Job.stage == Stage.compare.value).order_by(Job.id.desc()))
    if job_id is None:
        raise NoComparison("no comparison job yet: run `jobs submit compare --preset smoke` first")
    return job_id


def comparison_rows(compare_job: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], list[str]]:
    """(experiments, metric rows, failures by 'method:stage', expected stages) of a comparison's children."""
    with transaction() as session:
        parent = session.get(Job, compare_job)
        if parent is None or parent.stage != Stage.compare.value:
            raise NoComparison(f"job {compare_job} is not a comparison; `jobs list` shows the jobs")
        children = session.scalars(select(Job).where(Job.parent_id == compare_job)).all()
        experiments = session.scalars(
            select(Experiment).where(Experiment.job_id.in_([c.id for c in children])).order_by(Experiment.id)
        ).all()
        experiment_dicts = [
            {
                "id": e.id,
                "job_id": e.job_id,
                "stage": e.stage,
                "peft_method": e.peft_method,
                "status": e.status,
                "metrics": dict(e.metrics or {}),
            }
            for e in experiments
        ]
        metrics = session.scalars(select(Metric).where(Metric.experiment_id.in_([e.id for e in experiments])))
        metric_dicts = [
            {"experiment_id": m.experiment_id, "split": m.split, "epoch": m.epoch, "step": m.step,
             "name": m.name, "value": m.value}
            for m in metrics
        ]  # fmt: skip
        failures = {}
        for child in children:
            method = (child.config or {}).get("peft", {}).get("method")
            if child.state != JobState.SUCCEEDED.value and child.stage != Stage.report.value:
                error = (child.error or "").splitlines()[0] if child.error else "did not finish"
                failures[f"{method}:{child.stage}"] = f"job {child.id} {child.state}: {error}"
        stages = {c.stage for c in children} - {Stage.prepare_data.value, Stage.report.value}
    expected = [s for s in (Stage.train.value, Stage.train_full.value, Stage.evaluate.value) if s in stages]
    return experiment_dicts, metric_dicts, failures, expected


def report_stage(config: RunConfig, recorder: Recorder, *, compare_job: int | None = None) -> StageResult:
    """Build the comparison report from the database; a comparison's own report also settles its parent."""
    from worker.report import build_report

    compare_job = compare_job or latest_compare_job()
    try:
        experiments, metrics, failures, expected = comparison_rows(compare_job)
        result = build_report(
            experiments,
            metrics,
            Path(config.run_path("report")),
            compare_job_id=compare_job,
            expected_stages=expected,
            failures=failures,
        )
    except Exception as exc:
        settle_parent(compare_job, JobState.FAILED, f"report failed: {exc}")
        raise
    _log_to_mlflow(config, compare_job, result)
    if failures:
        summary = "; ".join(f"{key}: {why}" for key, why in sorted(failures.items()))
        error = f"{len(failures)} step(s) did not succeed ({summary}); the report covers the rest"
        settle_parent(compare_job, JobState.FAILED, error=error, artifacts=result.artifacts)
    else:
        settle_parent(compare_job, JobState.SUCCEEDED, error=None, artifacts=result.artifacts)
    return result


def _log_to_mlflow(config: RunConfig, compare_job: int, result: StageResult) -> None:
    """The report's files as MLflow artifacts when the comparison asked for that logger: a view, so a tracking
    server that does not answer is a warning, never a failed report (the database stays the record). It runs
    before the parent is settled, never in between the parent's end and the report job's own."""
    if "mlflow" not in config.train.loggers:
        return  # without importing the ML side
    from worker.tracking import log_report

    try:
        log_report(config, f"report-compare-{compare_job}", [Path(p) for p in result.artifacts.values()])
    except Exception as exc:
        log.warning("report of comparison %s: not logged to MLflow (%s: %s)", compare_job, type(exc).__name__, exc)
