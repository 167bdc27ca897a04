"""The report stage: reads a comparison's or sweep's rows from the database and hands them to worker.report.

It lives in `jobs` because it reads SQL; the rendering itself (worker/report) sees only plain dicts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from db.models import Experiment, Job, Metric
from jobs.core import storage
from jobs.core.database import transaction
from jobs.core.schemas import JobState
from jobs.core.stages import Stage
from jobs.pipelines.grid import COMPARE_GRID, dotted_get
from jobs.pipelines.settle import settle_parent

if TYPE_CHECKING:
    from worker.config import RunConfig
    from worker.recorder import Recorder
    from worker.result import StageResult

log = logging.getLogger(__name__)


class NoComparison(LookupError):
    """There is no comparison job to report on."""


PARENT_STAGES = (Stage.compare.value, Stage.sweep.value)


def latest_compare_job() -> int:
    with transaction() as session:
        job_id = session.scalar(select(Job.id).where(Job.stage.in_(PARENT_STAGES)).order_by(Job.id.desc()))
    if job_id is None:
        raise NoComparison("no comparison job yet: run `jobs submit compare --preset smoke` first")
    return job_id


@dataclass
class ComparisonRows:
    """What the report of one comparison or sweep is built from, read from its parent and children."""

    kind: str
    grid: dict[str, list[str]]
    metric: str | None
    mode: str | None
    experiments: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)


# Per-item files the stages write (artifact name, the field naming the item): the report compares two runs item
# by item from them. Which values they hold (under which baseline and protocol prefixes) is the metric registry's
# to say (worker.metric_registry.per_item_keys). The predictions file names a study by its IU-Xray id, "uid".
PER_ITEM_FILES = {
    Stage.evaluate.value: ("predictions", "uid"),
    Stage.train.value: ("val_hits", "image"),
}


def _per_item(stage: str, artifacts: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """value name -> item -> value from the stage's per-item JSONL file; empty when there is none (any more)."""
    from worker.metric_registry import per_item_keys

    if stage not in PER_ITEM_FILES:
        return {}
    artifact, key = PER_ITEM_FILES[stage]
    names = per_item_keys(stage)
    name = (artifacts or {}).get(artifact) or ""
    try:
        path = storage.local_copy(name, missing_ok=True)  # written on another host: downloaded from the bucket
    except storage.StorageError as exc:
        log.warning("%s: not read (%s)", name, exc)
        return {}
    if not name or not path.is_file():
        return {}
    values: dict[str, dict[str, float]] = {name: {} for name in names}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for name in names:
            if isinstance(record.get(name), int | float):
                values[name][str(record[key])] = float(record[name])
    return {name: by_item for name, by_item in values.items() if by_item}


def _protocol(stage: str, config: dict[str, Any] | None) -> str | None:
    """The scoring protocol of an evaluate run's unprefixed text metrics: its eval.protocol (the default,
    native, where its config predates the setting); None for the other stages."""
    if stage != Stage.evaluate.value:
        return None
    return ((config or {}).get("eval") or {}).get("protocol") or "native"


def comparison_rows(compare_job: int) -> ComparisonRows:
    """The experiments of a comparison's or sweep's children, each with its grid point and seed, and what failed."""
    from worker.report.analysis import cell_label

    with transaction() as session:
        parent = session.get(Job, compare_job)
        if parent is None or parent.stage not in PARENT_STAGES:
            raise NoComparison(f"job {compare_job} is not a comparison or a sweep; `jobs list` shows the jobs")
        params = parent.params or {}
        grid = params.get("grid") or COMPARE_GRID
        rows = ComparisonRows(parent.stage, grid, params.get("metric"), params.get("mode"))
        children = {c.id: c for c in session.scalars(select(Job).where(Job.parent_id == compare_job))}
        point = {
            job_id: ({key: dotted_get(job.config or {}, key) for key in grid}, int((job.config or {}).get("seed", 0)))
            for job_id, job in children.items()
            if job.stage not in (Stage.prepare_data.value, Stage.report.value)
        }
        experiments = session.scalars(
            select(Experiment).where(Experiment.job_id.in_(list(children))).order_by(Experiment.id)
        ).all()
        for e in experiments:
            if e.job_id not in point:
                continue
            cell, seed = point[e.job_id]
            row = {"id": e.id, "job_id": e.job_id, "stage": e.stage, "peft_method": e.peft_method,
                   "status": e.status, "metrics": dict(e.metrics or {}), "cell": cell, "seed": seed,
                   "protocol": _protocol(e.stage, children[e.job_id].config)}  # fmt: skip
            row["per_item"] = _per_item(e.stage, e.artifacts)
            rows.experiments.append(row)
        metrics = session.scalars(select(Metric).where(Metric.experiment_id.in_([e.id for e in experiments])))
        rows.metrics = [
            {"experiment_id": m.experiment_id, "split": m.split, "epoch": m.epoch, "step": m.step,
             "name": m.name, "value": m.value}
            for m in metrics
        ]  # fmt: skip
        for child in children.values():
            if child.state == JobState.SUCCEEDED.value or child.stage == Stage.report.value:
                continue
            error = (child.error or "").splitlines()[0] if child.error else "did not finish"
            seed = (child.config or {}).get("seed")
            where = f"{cell_label(point[child.id][0], list(grid))} " if child.id in point else ""
            rows.failures.append(
                {"label": f"{where}seed {seed} {child.stage}", "reason": f"job {child.id} {child.state}: {error}"}
            )
    return rows


def report_stage(config: RunConfig, recorder: Recorder, *, compare_job: int | None = None) -> StageResult:
    """Build the comparison or sweep report from the database; a parent's own report also settles the parent."""
    from worker.report.stage import build_report

    compare_job = compare_job or latest_compare_job()
    try:
        rows = comparison_rows(compare_job)
        result = build_report(
            rows.experiments,
            rows.metrics,
            Path(config.run_path("report")),
            grid=rows.grid,
            kind=rows.kind,
            compare_job_id=compare_job,
            report_job_id=getattr(recorder, "job_id", None),  # the database recorder knows its job
            metric=rows.metric,
            mode=rows.mode,
            failures=rows.failures,
            split=config.data.describe_split(),
        )
    except Exception as exc:
        settle_parent(compare_job, JobState.FAILED, f"report failed: {exc}")
        raise
    _log_to_mlflow(config, compare_job, result)
    # The parent names the report's files too: uploaded first when they go to the artifacts bucket.
    store = storage.bucket()
    parent_artifacts = store.publish(result.artifacts) if store else result.artifacts
    if rows.failures:
        summary = "; ".join(f"{f['label']}: {f['reason']}" for f in rows.failures)
        error = f"{len(rows.failures)} step(s) did not succeed ({summary}); the report covers the rest"
        settle_parent(compare_job, JobState.FAILED, error=error, artifacts=parent_artifacts)
    else:
        settle_parent(compare_job, JobState.SUCCEEDED, error=None, artifacts=parent_artifacts)
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
