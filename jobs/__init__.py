"""Job system: Celery app, task wrappers, the `jobs` CLI. Imports worker lazily, inside task bodies."""
