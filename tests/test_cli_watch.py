"""`jobs submit --wait` trusts the job's own heartbeat over worker pings (jobs/cli/watch.py).

The unit tests drive JobWatch with a fake clock and a ping that never answers. The end-to-end tests
SIGSTOP a real worker: its main process (which answers pings) alone, while its child keeps running the job
and beating; then the whole worker, so nothing moves at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime, timedelta

import pytest
from jobs_fixtures import REPO, WATCH_TIMINGS, Worker, override, wait_for

from jobs import service
from jobs.broker import queue
from jobs.cli import watch
from jobs.cli.watch import JobWatch
from jobs.core.schemas import JobState, JobView
from jobs.core.settings import get_settings

T0 = datetime(2026, 1, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(watch.time, "monotonic", fake)
    return fake


def view(state: JobState, heartbeat_s: float | None = None, children: list[JobView] | None = None) -> JobView:
    heartbeat = None if heartbeat_s is None else T0 + timedelta(seconds=heartbeat_s)
    return JobView(
        id=1, stage="train", state=state, params={}, config=None, celery_task_id=None, submitted_at=T0,
        started_at=T0, finished_at=None, heartbeat_at=heartbeat, attempts=1, worker_host="h", gpu_name=None,
        error=None, parent_id=None, idempotency_key=None, children=children or [],
    )  # fmt: skip


def test_a_running_job_whose_heartbeat_moves_is_alive_while_no_worker_answers(clock):
    pings: list[float] = []
    watcher = JobWatch(patience_s=2.0, ping=lambda: pings.append(clock.now) or False)
    for second in range(30):
        clock.now += 1.0
        assert watcher.silent_for(view(JobState.RUNNING, heartbeat_s=second)) < 2.0
    assert pings == []  # the rows moved at every look: no ping was needed


def test_a_frozen_heartbeat_and_no_answer_gives_up_naming_the_running_state(clock):
    watcher = JobWatch(patience_s=2.0, ping=lambda: False)
    frozen = view(JobState.RUNNING, heartbeat_s=0)
    silences = []
    for _ in range(6):
        clock.now += 0.5
        silences.append(watcher.silent_for(frozen))
    assert silences[-1] > 2.0 and silences == sorted(silences)
    message = watcher.gave_up_message(frozen, silences[-1])
    assert "job 1 is RUNNING" in message and "no heartbeat" in message and "`jobs worker`" in message
    assert "QUEUED" not in message


def test_a_worker_that_answers_keeps_a_queued_job_waiting(clock):
    watcher = JobWatch(patience_s=2.0, ping=lambda: True)
    for _ in range(20):
        clock.now += 0.5
        assert watcher.silent_for(view(JobState.QUEUED)) < 2.0
    message = JobWatch(2.0, ping=lambda: False).gave_up_message(view(JobState.QUEUED), 3.0)
    assert "stays QUEUED" in message


def test_a_comparison_is_alive_while_one_of_its_children_beats(clock):
    watcher = JobWatch(patience_s=2.0, ping=lambda: False)
    for second in range(10):
        clock.now += 1.0
        child = view(JobState.RUNNING, heartbeat_s=second).model_copy(update={"id": 2, "parent_id": 1})
        assert watcher.silent_for(view(JobState.RUNNING, children=[child])) < 2.0


# --- end to end, with a real worker and the real `jobs` script ----------------------------------------------

def _submit_and_wait(job_env, epochs: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(REPO / ".venv/bin/jobs"), "submit", "train", "--preset", "smoke", "--epochs", str(epochs), "--wait",
         "--json"],
        cwd=REPO, env={**os.environ, **job_env.variables}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _running_job(worker: Worker) -> JobView:
    def running() -> JobView | None:
        jobs = service.list_jobs()
        return jobs[0] if jobs and jobs[0].state is JobState.RUNNING else None

    return wait_for(running, 120, "the job to run", worker)


@pytest.fixture
def watch_env(job_env, monkeypatch: pytest.MonkeyPatch):
    override(job_env, monkeypatch, WATCH_TIMINGS)
    return job_env


def test_wait_follows_a_running_job_whose_worker_answers_no_ping(watch_env):
    job_env = watch_env
    patience = get_settings().stale_after_s
    worker = Worker(job_env, extra_env={"FAKE_EPOCH_S": "1"})
    try:
        worker.wait_ready()
        waiting = _submit_and_wait(job_env, epochs=int(3 * patience) + 2)
        job = _running_job(worker)
        # The worker's main process answers pings; its pool child runs the job and writes the heartbeat.
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            assert worker.hostname not in queue.workers_answering()
            stdout, stderr = waiting.communicate(timeout=240)
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
    finally:
        worker.stop()
    assert waiting.returncode == 0, stderr + worker.output()[-3000:]
    final = service.get_job(job.id)
    assert final.state is JobState.SUCCEEDED and final.attempts == 1
    # The job outlived the ping patience several times over while the CLI kept following it.
    assert (final.finished_at - final.started_at).total_seconds() > 2 * patience
    assert f'"id": {job.id}' in stdout


def test_wait_gives_up_on_a_running_job_that_stopped_moving_and_names_its_state(watch_env):
    job_env = watch_env
    worker = Worker(job_env, extra_env={"FAKE_EPOCH_S": "1"})
    try:
        worker.wait_ready()
        waiting = _submit_and_wait(job_env, epochs=60)
        job = _running_job(worker)
        os.killpg(worker.process.pid, signal.SIGSTOP)  # the whole worker: no ping, no heartbeat
        _, stderr = waiting.communicate(timeout=120)
    finally:
        worker.stop()
    assert waiting.returncode == 1
    assert f"job {job.id} is RUNNING but nothing of it has moved" in stderr and "`jobs worker`" in stderr
    assert service.get_job(job.id).state is JobState.RUNNING  # left for a worker's sweep to re-queue
