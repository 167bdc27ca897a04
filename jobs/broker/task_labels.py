"""What Flower and `celery inspect` show for a job's task: `job 12, train, qlora` instead of `(12,)`.

A stage's task takes the job id alone (its row holds the rest), so the message's args say nothing a user
recognises. Celery sends `argsrepr` with every message for monitors to display; it is set here, in the
publishing process, for every message that runs a job (a submit, a comparison's canvas, a resend).

The label goes into the message's options where the message is built (jobs/broker/queue.py), not only into
its headers: Celery copies `argsrepr` into the `task-sent` event before `before_task_publish` runs, and a
`task-sent` event that reaches Flower after the worker's `task-received` (a loaded publisher) overwrites the
args Flower shows. The signal still labels a message sent again from a stored delivery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import before_task_publish
from sqlalchemy import select

from db.models import Job
from jobs.core.database import transaction
from jobs.core.stages import Stage

log = logging.getLogger(__name__)
# Stages that train or read a PEFT model: their label names the method.
_WITHOUT_METHOD = {Stage.prepare_data.value, Stage.compare.value, Stage.sweep.value, Stage.report.value}


def task_label(job_id: int, stage: str, method: str | None) -> str:
    return ", ".join(part for part in (f"job {job_id}", stage, method) if part)


def _method(job_id: int, stage: str) -> str | None:
    if stage in _WITHOUT_METHOD:
        return None
    with transaction() as session:
        config = session.scalar(select(Job.config).where(Job.id == job_id)) or {}
    return (config.get("peft") or {}).get("method")


def job_task_label(job_id: int, stage: str) -> str | None:
    """The label of a job's task; None where it cannot be read (a label is for display: it never stops a job's
    message)."""
    try:
        return task_label(job_id, stage, _method(job_id, stage))
    except Exception:
        log.warning("could not label the task of job %s for monitors", job_id, exc_info=True)
        return None


@before_task_publish.connect
def label_job_task(
    sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None, **_: Any
) -> None:
    """Set the message's argsrepr to task_label; a message that is not a job's is left as it is."""
    args = body[0] if isinstance(body, tuple | list) and body else None
    if headers is None or sender not in {stage.value for stage in Stage} or not args or type(args[0]) is not int:
        return
    if label := job_task_label(args[0], sender):
        headers["argsrepr"] = label
