"""This process's connection to the experiments database (from settings), migrated on first use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from jobs.core.settings import get_settings

_engines: dict[str, tuple[Engine, sessionmaker[Session]]] = {}
# Databases this process (or the parent it was forked from) brought to head: a worker's fresh child per
# task skips the check.
_migrated: set[str] = set()


def engine() -> Engine:
    return _connect()[0]


def _connect() -> tuple[Engine, sessionmaker[Session]]:
    url = get_settings().database
    if url not in _engines:
        new_engine = create_db_engine(url)
        if url not in _migrated:
            upgrade(new_engine)
            _migrated.add(url)
        _engines[url] = (new_engine, session_factory(new_engine))
    return _engines[url]


@contextmanager
def transaction() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with _connect()[1]() as session, session.begin():
        yield session


def dispose_engines() -> None:
    """Drop pooled connections; a forked child must not reuse its parent's sockets."""
    for db_engine, _ in _engines.values():
        db_engine.dispose(close=False)
    _engines.clear()


def _transient(exc: BaseException) -> bool:
    # SQLite "database is locked" under write contention, or a dropped PostgreSQL connection.
    return isinstance(exc, OperationalError)


# Writes that must not be lost (metrics, state changes) retry for up to a minute with backoff.
retry_write = retry(
    retry=retry_if_exception(_transient),
    wait=wait_exponential(multiplier=0.05, max=2.0),
    stop=stop_after_delay(60),
    reraise=True,
)
