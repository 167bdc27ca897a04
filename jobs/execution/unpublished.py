"""A finished run whose files the artifacts bucket did not take: kept for a retry of the publish alone.

The publish after a stage (jobs/execution/artifacts.py `publish`) waits JOBS_PUBLISH_PATIENCE_S for a bucket
that is away. After that the training is over but its files exist only on the host that ran it. Running the
stage again would redo work and, for a run stopped early, train one more epoch (Lightning does not restore
the stop flag on resume). So the job ends FAILED with an error that starts with "publish pending", its
experiment row is marked `unpublished` with the run's numbers, and the run's result (naming its local files)
is left beside the job's log on this host. `jobs publish <id>` queues the job again; the worker that claims
it uploads the files and records the result without running the stage.

The record is host-local on purpose: only the host that finished the run has it. A host that picks up the
retry without it says so in one line instead of publishing its own copy of the run folder, which may be a
stale one from an attempt before a takeover.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from db.models import Experiment
from jobs.core.views import job_log_path

if TYPE_CHECKING:
    from worker.result import StageResult

log = logging.getLogger(__name__)

# Experiment.status of a run that finished but whose files are not in the bucket yet (the job is FAILED).
UNPUBLISHED = "unpublished"
# The experiment's artifacts while it is unpublished: where its files wait, as "<host>:<run folder>".
WAITING_ON = "unpublished_on"


@dataclass(frozen=True)
class Kept:
    result: StageResult
    run_dir: Path


def _path(job_id: int) -> Path:
    return job_log_path(job_id).with_suffix(".unpublished.json")


def host() -> str:
    return socket.gethostname()


def keep(job_id: int, result: StageResult, run_dir: Path) -> None:
    """Leave the finished run's result on this host for the publish-only retry (OSError if the folder is full)."""
    path = _path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps({"result": result.to_dict(), "run_dir": str(run_dir), "host": host()}))
    partial.replace(path)


def read(job_id: int) -> Kept | None:
    """What this host kept of the job's finished run; None when this host has no record of it or its folder."""
    from worker.result import StageResult  # torch-free

    try:
        kept: dict[str, Any] = json.loads(_path(job_id).read_text())
        result = StageResult(**kept["result"])
        run_dir = Path(kept["run_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Kept(result, run_dir) if run_dir.is_dir() else None


def forget(job_id: int) -> None:
    _path(job_id).unlink(missing_ok=True)


def pending(session: Session, job_id: int) -> bool:
    """Whether the job's run finished and waits for its publish (its experiment is unpublished)."""
    return bool(session.scalar(select(exists().where(Experiment.job_id == job_id, Experiment.status == UNPUBLISHED))))
