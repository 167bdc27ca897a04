"""Engines and sessions for SQLite (the embedded default) and PostgreSQL, from a URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

IDLE_IN_TRANSACTION_MS = 60_000


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so a worker and the CLI can share the file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: a worker idles for hours between jobs; PostgreSQL may have dropped the connection.
        # The idle-in-transaction limit: a process paused (SIGSTOP, a frozen VM) inside a transaction keeps its
        # row locks, the job row's included, and would hold off the claim of the worker taking its job over
        # for as long as it stays paused; the server ends such a session after a minute (our transactions are
        # a few statements long).
        # Added to the URL's own options (a search_path, say), which a connect argument would replace.
        given = parsed.query.get("options")
        options = " ".join(filter(None, [given if isinstance(given, str) else " ".join(given or ()),
                                         f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"]))
        return create_engine(url, pool_pre_ping=True, connect_args={"options": options})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # WAL: readers (the CLI, the API) never block the worker's writes, and the reverse.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: views are built from rows after the transaction that loaded them commits.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
