"""What the service raises; the CLI turns these into exit codes, the API into HTTP statuses."""

from __future__ import annotations

from jobs.broker.queue import BrokerUnavailable
from jobs.core.schemas import JobView
from jobs.core.storage import StorageError

__all__ = [
    "BrokerUnavailable",
    "ExperimentNotFound",
    "IdempotencyConflict",
    "InvalidRequest",
    "JobNotFound",
    "StorageError",
]


class JobNotFound(LookupError):
    """No job with that id."""


class ExperimentNotFound(LookupError):
    """No experiment with that id."""


class InvalidRequest(ValueError):
    """The request cannot run; the message names the field and the fix. `field` is the dotted config key or
    request field at fault (`params.checkpoint`, `model.siglip`, `config`), when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class IdempotencyConflict(ValueError):
    """The idempotency key was first used for another request; `job_id` is the job it made."""

    def __init__(self, key: str, job: JobView):
        super().__init__(
            f"idempotency key {key!r} was first used for job {job.id} (a {job.stage} job) with a different "
            f"request; repeat that request exactly to get job {job.id} again, or use a new key"
        )
        self.job_id = job.id
