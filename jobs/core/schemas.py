"""What the job service takes and returns: plain pydantic types, free of torch and SQL.

The CLI and the HTTP API both speak these; `jobs/core/views.py` turns database rows into them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from db.models import MAX_ROW_ID
from jobs.core.stages import GPU_CLASS_PATTERN, Stage, StageParams
from jobs.core.text import StorableStr


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class SubmitRequest(BaseModel):
    """A job to enqueue: a stage, its config (preset or file plus dotted overrides) and its params."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    preset: StorableStr | None = Field(
        "smoke", description="Preset name under configs/ (ignored when config_path is set)."
    )
    config_path: StorableStr | None = Field(None, description="A YAML config file instead of a preset.")
    overrides: dict[StorableStr, StorableStr] = Field(
        default_factory=dict, description='Dotted config keys to raw values, e.g. {"train.epochs": "3"}.'
    )
    params: StageParams = Field(default_factory=StageParams)
    gpu_class: str | None = Field(
        None,
        pattern=GPU_CLASS_PATTERN,
        description="Send GPU stages to the queue gpu.<class> (e.g. a100), taken by workers started with it.",
    )
    idempotency_key: StorableStr | None = Field(
        None, min_length=1, max_length=200, description="The same key again returns the first job."
    )
    parent_id: int | None = Field(None, ge=1, le=MAX_ROW_ID, description="The comparison job this job belongs to.")


class JobView(BaseModel):
    """A job as `jobs status` and `GET /jobs/{id}` show it."""

    id: int
    stage: str
    state: JobState
    params: dict[str, Any]
    config: dict[str, Any] | None
    progress: dict[str, Any] | None = Field(None, description='{"epoch", "step", "total", "percent"}')
    celery_task_id: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None = Field(None, description="When the run last proved it is alive (RUNNING jobs).")
    attempts: int
    worker_host: str | None
    gpu_name: str | None
    error: str | None
    parent_id: int | None
    idempotency_key: str | None
    cancel_requested: bool = False
    children: list[JobView] = Field(default_factory=list)
    experiment_ids: list[int] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)


class ExperimentView(BaseModel):
    """One stage run with its final numbers, as `jobs results` and `GET /experiments` show it."""

    id: int
    job_id: int | None
    stage: str
    peft_method: str | None
    model_ids: dict[str, Any]
    dataset: str | None
    config_hash: str
    git_commit: str | None
    versions: dict[str, str | None]
    seed: int | None
    status: str
    created_at: datetime
    finished_at: datetime | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    checkpoint_path: str | None
    artifacts: dict[str, str] = Field(default_factory=dict)


class MetricView(BaseModel):
    """One recorded value: enough to draw a curve from SQL alone."""

    experiment_id: int
    split: str
    epoch: int | None
    step: int | None
    name: str
    value: float
