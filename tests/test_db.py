"""The schema and its migrations on SQLite and PostgreSQL; the metric upsert; UTC timestamps."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from jobs_fixtures import REPO, drop_postgres_schema, postgres_schema
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.exc import IntegrityError, OperationalError

from db import migrate
from db.engine import create_db_engine, session_factory, transaction
from db.migrate import current_revision, head_revision, upgrade
from db.models import Base, Experiment, Job, Metric
from db.queries import upsert_metrics


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        db_engine = create_db_engine(f"sqlite:///{tmp_path / 'experiments.db'}")
        yield db_engine
        db_engine.dispose()
        return
    schema = postgres_schema()
    db_engine = create_db_engine(schema.url)
    try:
        yield db_engine
    finally:
        db_engine.dispose()
        drop_postgres_schema(schema)


def test_migrations_build_exactly_the_models(engine):
    upgrade(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert {"jobs", "experiments", "metrics", "alembic_version"} <= set(inspect(engine).get_table_names())
    upgrade(engine)  # at head already: nothing to do


def test_metric_points_are_upserted_not_duplicated(engine):
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        job = Job(stage="train")
        session.add(job)
        session.flush()
        experiment = Experiment(job_id=job.id, stage="train", config_hash="abc")
        session.add(experiment)
        session.flush()
        experiment_id = experiment.id
    for value in (1.0, 0.5):  # the same point twice, as after a resume
        with transaction(factory) as session:
            upsert_metrics(session, experiment_id, [("val_loss", value)], split="val", epoch=3, step=None)
    with transaction(factory) as session:
        upsert_metrics(session, experiment_id, [("val_loss", 0.7)], split="val", epoch=4, step=None)
        upsert_metrics(session, experiment_id, [("val_loss", float("nan"))], split="test", epoch=None, step=None)
    with transaction(factory) as session:
        rows = session.execute(select(Metric.split, Metric.epoch, Metric.value).order_by(Metric.id)).all()
    assert sorted(rows, key=str) == sorted([("val", 3, 0.5), ("val", 4, 0.7), ("test", -1, None)], key=str)

    with pytest.raises(IntegrityError), transaction(factory) as session:  # one experiment per job
        session.add(Experiment(job_id=job.id, stage="train", config_hash="abc"))


def test_timestamps_come_back_as_utc(engine):
    upgrade(engine)
    factory = session_factory(engine)
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with transaction(factory) as session:
        session.add(Job(stage="train", submitted_at=moment))
    with transaction(factory) as session:
        stored = session.scalar(select(Job.submitted_at))
        earlier = session.scalar(select(func.count()).select_from(Job).where(Job.submitted_at < moment))
    assert stored == moment and stored.tzinfo == UTC
    assert earlier == 0


def test_concurrent_first_starts_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    errors: list[BaseException] = []

    def start() -> None:
        try:
            upgrade(create_db_engine(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with create_db_engine(url).connect() as connection:
        assert current_revision(connection) == head_revision()


def test_a_database_busy_at_first_start_is_tried_again(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    calls: list[int] = []

    def busy_once() -> str | None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("PRAGMA journal_mode=WAL", {}, sqlite3.OperationalError("database is locked"))
        return head_revision()

    monkeypatch.setattr(migrate, "head_revision", busy_once)
    upgrade(create_db_engine(url))
    assert len(calls) >= 2
    with create_db_engine(url).connect() as connection:
        assert current_revision(connection) == head_revision()


def test_the_alembic_command_line_uses_database_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    completed = subprocess.run(
        [str(REPO / ".venv/bin/alembic"), "-c", "db/migrations/alembic.ini", "upgrade", "head"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    with create_db_engine(url).connect() as connection:
        assert current_revision(connection) == head_revision()
