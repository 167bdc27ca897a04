"""The job system: everything between a request and a stage function of `worker`.

Layered, each package importing only those below it (pyproject.toml's import-linter contract):

    cli/        the `jobs` command and what it prints
    service/    what the CLI and the HTTP API call: submit, cancel, read back; the shortcut options
    pipelines/  comparisons and sweeps (a parent, child jobs, a Celery canvas) and the report stage
    execution/  what a worker does: Celery tasks, claim, run, record, heartbeat, the repair sweeps
    broker/     the Celery app and queues, sending messages, the local Redis
    core/       settings, the SQL session, stages and their params, request and view types

Of `worker`, only the torch-free config (worker.config, worker.locations) is imported at module level; stage
functions are imported inside the functions that run them, so nothing here loads torch at import.
"""
