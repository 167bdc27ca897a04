"""Bring a database to the latest schema with Alembic, safely from several processes at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; PostgreSQL advisory locks are keyed by a 64-bit integer.
_PG_LOCK_KEY = 0x6D6564766C


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    # Read the version table directly: MigrationContext would log on every process start.
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _migration_lock(engine: Engine, connection: Connection) -> Iterator[None]:
    """Only one process migrates at a time: the worker, the API and the CLI may all start together."""
    if engine.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with FileLock(f"{database}.migrate-lock"):
        yield


def _sqlite_busy(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


# Several processes opening a fresh SQLite file at once (a worker, the API, the CLI on a new clone) can get
# "database is locked" despite the busy timeout: switching the new file to WAL, or upgrading a read
# transaction to a write, is refused at once when waiting could deadlock. A fresh try succeeds.
@retry(
    retry=retry_if_exception(_sqlite_busy),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.2, max=3),
    reraise=True,
)
def upgrade(engine: Engine) -> None:
    """Migrate to head unless already there (a cheap check, so every process can call it at start)."""
    head = head_revision()
    with engine.connect() as connection:
        if current_revision(connection) == head:
            return
    with engine.connect() as connection, _migration_lock(engine, connection):
        if current_revision(connection) == head:
            return
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
