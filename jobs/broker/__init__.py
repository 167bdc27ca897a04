"""The message side: the Celery app and its queues, sending and inspecting job messages, and the local
Redis the embedded default runs on. Runs no job."""
