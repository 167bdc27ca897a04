"""Writes that need more than the ORM's add(): upserts that keep a resumed run from duplicating rows."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import NO_INDEX, Metric, utcnow

_METRIC_KEY = ["experiment_id", "split", "epoch", "step", "name"]


def _insert(session: Session, table: Any) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"metric upsert supports SQLite and PostgreSQL, not {dialect}")


def upsert_metrics(
    session: Session,
    experiment_id: int,
    values: Iterable[tuple[str, float]],
    *,
    split: str,
    epoch: int | None,
    step: int | None,
) -> int:
    """Insert (name, value) pairs at one (split, epoch, step); a point recorded before with another value is
    overwritten, with the same value left as it was."""
    now = utcnow()
    rows = [
        {
            "experiment_id": experiment_id,
            "split": split,
            "epoch": NO_INDEX if epoch is None else epoch,
            "step": NO_INDEX if step is None else step,
            "name": name,
            "value": None if math.isnan(value) else value,
            "recorded_at": now,
        }
        for name, value in values
    ]
    if not rows:
        return 0
    statement = _insert(session, Metric).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=_METRIC_KEY,
        set_={"value": statement.excluded.value, "recorded_at": statement.excluded.recorded_at},
        # The same value again (a resumed run recording what its checkpoint held) leaves the row untouched.
        where=Metric.__table__.c.value.is_distinct_from(statement.excluded.value),
    )
    session.execute(statement)
    return len(rows)
