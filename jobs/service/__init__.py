"""The job service: what the CLI and the HTTP API call. Raises the errors in errors.py, never HTTP errors.

submission.py  validate, record and enqueue a request; cancel; publish a finished run again
queries.py     jobs, experiments, metrics, logs and health as the views of jobs/core/schemas.py
shortcuts.py   the options people change most (--epochs, "epochs"), declared once for the CLI and the API
"""

from jobs.service.errors import (
    BrokerUnavailable,
    ExperimentNotFound,
    IdempotencyConflict,
    InvalidRequest,
    JobNotFound,
    StorageError,
)
from jobs.service.queries import (
    experiment_metrics,
    get_experiment,
    get_job,
    health,
    job_metrics,
    latest_metrics,
    latest_report_job,
    list_experiments,
    list_jobs,
    read_logs,
)
from jobs.service.submission import (
    cancel,
    create_job,
    publish,
    run_comparison_inline,
    submit,
    validate,
    validate_runs,
)

__all__ = [
    "BrokerUnavailable",
    "ExperimentNotFound",
    "IdempotencyConflict",
    "InvalidRequest",
    "JobNotFound",
    "StorageError",
    "cancel",
    "create_job",
    "experiment_metrics",
    "get_experiment",
    "get_job",
    "health",
    "job_metrics",
    "latest_metrics",
    "latest_report_job",
    "list_experiments",
    "list_jobs",
    "publish",
    "read_logs",
    "run_comparison_inline",
    "submit",
    "validate",
    "validate_runs",
]
