"""The three tables: jobs (the queue's durable state), experiments (one per stage run), metrics (curves).

Schema changes go through an Alembic migration in db/migrations/versions; tests check the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Metrics keyed by (experiment, split, epoch, step, name) must be unique, but SQL treats NULLs as distinct in
# unique indexes (SQLite and PostgreSQL < 15 alike); "no epoch" / "no step" is stored as this value instead.
NO_INDEX = -1

# Row ids are 32-bit INTEGER columns (SQLite's rowid alias must be exactly INTEGER; PostgreSQL's is int4):
# every id that reaches a query is bounded by this, so both backends answer "not found", not an overflow.
MAX_ROW_ID = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive, so comparisons stay textual and right)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The submitted config source (preset, file, overrides) and the validated, resolved config.
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="QUEUED")
    celery_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    gpu_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The Celery message that runs the job, with its place in a canvas (chain, chord): re-sent as it was
    # when the job's worker dies, so the steps after it still run.
    delivery: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)

    children: Mapped[list[Job]] = relationship(order_by="Job.id")
    experiments: Mapped[list[Experiment]] = relationship(back_populates="job", order_by="Experiment.id")


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (
        # One stage run per job: a job taken over after a crash keeps updating the same row.
        UniqueConstraint("job_id", name="uq_experiments_job_id"),
        Index("ix_experiments_stage_peft", "stage", "peft_method"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    stage: Mapped[str] = mapped_column(String(32))
    peft_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset: Mapped[str | None] = mapped_column(String(255), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_hash: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The result fields every training stage reports, as columns so SQL can sort and compare them.
    train_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    samples_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_gpu_mem_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_gpu_reserved_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_ram_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    trainable_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    best_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Everything the StageResult carried, under the names the stages use.
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)

    job: Mapped[Job | None] = relationship(back_populates="experiments")


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("experiment_id", "split", "epoch", "step", "name", name="uq_metrics_point"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer, default=NO_INDEX)
    step: Mapped[int] = mapped_column(Integer, default=NO_INDEX)
    name: Mapped[str] = mapped_column(String(128))
    # NULL stands for NaN (a diverged loss): SQLite cannot store NaN, so both backends store NULL.
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
