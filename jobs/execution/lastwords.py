"""A run's final state kept outside the database, for when the database refuses the write (its disk full).

The run that could not record its end leaves `job-<id>.final.json` beside its log; whoever next looks at
the stale job (the sweep, or a worker given its message again) ends it with that state and error instead
of running it once more, as soon as the database takes writes again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jobs.core.views import job_log_path

log = logging.getLogger(__name__)


def _path(job_id: int) -> Path:
    return job_log_path(job_id).with_suffix(".final.json")


def leave(job_id: int, state: str, error: str | None) -> None:
    try:
        path = _path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"state": state, "error": error}))
    except OSError:  # the log folder is full too: the job will be taken over and run again instead
        log.exception("job %s: could not keep its final state outside the database either", job_id)


def read(job_id: int) -> tuple[str, str | None] | None:
    try:
        words = json.loads(_path(job_id).read_text())
    except (OSError, ValueError):
        return None
    return str(words["state"]), words.get("error")


def forget(job_id: int) -> None:
    _path(job_id).unlink(missing_ok=True)
