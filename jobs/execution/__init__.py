"""What a worker does: one Celery task per stage, claiming a job row, running its stage with heartbeats and
a captured log, recording what it returns, and the periodic sweep that repairs dead workers and lost messages.
`jobs run` uses the same runner in its own process."""
