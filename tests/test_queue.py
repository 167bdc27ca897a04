"""Jobs through the real queue: `jobs submit` in a subprocess, `jobs worker` subprocesses running the fake stage.

Every scenario runs on the embedded default (SQLite database, the local Redis broker) and on Redis + PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_fixtures import (
    BACKENDS,
    TAKEOVER_TIMINGS,
    JobEnv,
    Worker,
    both_backends,
    invoke,
    run_cli,
    starts,
    wait_for,
)
from sqlalchemy import func, select

from db.models import Experiment, Metric
from jobs import service
from jobs.broker.celery_app import app_for
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage

pytestmark = pytest.mark.slow

EPOCH_S = "0.25"


@pytest.fixture(params=BACKENDS)
def queue_env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    yield from both_backends(request.param, tmp_path, monkeypatch)


@pytest.fixture
def start_worker(queue_env: JobEnv) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(name: str = "w", epoch_s: str = EPOCH_S, **extra_env: str) -> Worker:
        worker = Worker(queue_env, extra_env={"FAKE_EPOCH_S": epoch_s, **extra_env}, name=name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def submit(*args: str) -> int:
    result = invoke("submit", "train", *args)
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def state(job_id: int) -> JobState:
    return service.get_job(job_id).state


def metric_count(job_id: int, name: str | None = None) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(Metric).join(Experiment).where(Experiment.job_id == job_id)
        if name:
            query = query.where(Metric.name == name)
        return session.scalar(query)


def redeliver(job_id: int) -> str:
    """Send the job's task again, as a broker would after a lost acknowledgement; returns the new task id."""
    task_id = str(uuid.uuid4())
    app_for().send_task("train", args=[job_id], task_id=task_id, queue="gpu")
    return task_id


def test_submit_cancel_and_redelivery_through_a_worker(queue_env, start_worker):
    worker = start_worker()
    long_job = submit("--epochs", "40")
    queued_job = submit("--epochs", "2")
    wait_for(lambda: metric_count(long_job, "train_loss") >= 1, 60, "the long job to record an epoch", worker)

    # A queued job is cancelled at once, and its message, when a worker gets it, runs nothing.
    cancelled = json.loads(invoke("cancel", str(queued_job), "--json").stdout)
    assert cancelled["state"] == "CANCELLED"
    # A running job stops at its next epoch and keeps what it recorded.
    assert "cancel requested" in invoke("cancel", str(long_job)).stdout
    wait_for(lambda: state(long_job) is JobState.CANCELLED, 30, "the running job to stop", worker)
    assert 1 <= metric_count(long_job, "train_loss") < 40

    # A job submitted with the real `jobs` script and --wait runs to the end; its rows are in the tables.
    completed = run_cli(queue_env, "submit", "train", "--epochs", "2", "--peft", "qlora", "--wait", "--json")
    assert completed.returncode == 0, completed.stderr + worker.output()[-3000:]
    done = json.loads(completed.stdout)
    assert done["state"] == "SUCCEEDED" and len(done["experiment_ids"]) == 1
    results = json.loads(invoke("results", "--peft", "qlora", "--json").stdout)
    assert [r["job_id"] for r in results] == [done["id"]] and results[0]["status"] == "succeeded"
    assert metric_count(done["id"]) == 6

    # Redelivering a finished job's message does nothing (and stores no result: a canvas must not move on).
    duplicate = redeliver(done["id"])
    note = f"job {done['id']}: not run (job already SUCCEEDED)"
    wait_for(lambda: note in worker.output(), 30, "the duplicate to be skipped", worker)
    assert app_for().AsyncResult(duplicate).state == "PENDING"
    assert service.get_job(done["id"]).attempts == 1 and starts(done["artifacts"]["run_dir"]) == [0]
    never_ran = service.get_job(queued_job)
    assert never_ran.state is JobState.CANCELLED and never_ran.attempts == 0 and never_ran.started_at is None

    # A pickled message is refused by the worker: the job it names is not run.
    unsent, _ = service.create_job(SubmitRequest(stage=Stage.train))
    app_for().send_task("train", args=[unsent.id], queue="gpu", serializer="pickle")
    wait_for(lambda: "pickle" in worker.output(), 30, "the worker to refuse the pickled message", worker)
    assert service.get_job(unsent.id).state is JobState.QUEUED and service.get_job(unsent.id).attempts == 0


def test_a_redelivered_message_of_a_running_job_does_not_run_it_twice(queue_env, start_worker):
    first, second = start_worker("first"), start_worker("second")
    job_id = submit("--epochs", "12")
    wait_for(lambda: state(job_id) is JobState.RUNNING, 60, "the job to start", first)
    # Progress shows in the task's state too (what Flower displays), not only in the job row.
    task = app_for().AsyncResult(service.get_job(job_id).celery_task_id)
    wait_for(lambda: task.state == "PROGRESS", 30, "a PROGRESS task state", first)
    assert task.info["job_id"] == job_id and 0 < task.info["percent"] <= 100
    # The idle worker gets the duplicate while the job's heartbeat is fresh, and skips it.
    redeliver(job_id)
    note = f"job {job_id}: not run (job is running on"
    wait_for(lambda: note in first.output() + second.output(), 60, "the duplicate to be skipped", second)
    wait_for(lambda: state(job_id).finished, 60, "the job to finish", second)
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 1
    assert starts(job.artifacts["run_dir"]) == [0]
    assert metric_count(job_id) == 36


def test_a_job_whose_worker_is_killed_is_taken_over_and_resumed(queue_env, start_worker):
    doomed = start_worker("doomed", epoch_s="0.4")
    job_id = submit("--epochs", "10")
    wait_for(lambda: metric_count(job_id, "train_loss") >= 3, 60, "three epochs", doomed)
    doomed.kill()
    assert state(job_id) is JobState.RUNNING  # nobody has noticed yet
    rescuer = start_worker("rescuer", epoch_s="0.05", **TAKEOVER_TIMINGS)
    wait_for(lambda: state(job_id).finished, 60, "the job to be taken over and finish", rescuer)
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    first_start, resumed_at = starts(job.artifacts["run_dir"])
    # Resumed after the last checkpoint (epoch 1 or later was written before the kill), not from scratch.
    assert first_start == 0 and resumed_at >= 2
    assert len(job.experiment_ids) == 1
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Experiment)) == 1
    assert metric_count(job_id) == 30  # 10 epochs x 3 names: no point recorded twice
    assert "took over" in rescuer.output() or "re-queued" in rescuer.output()


def test_a_chord_continues_after_a_header_job_is_taken_over(queue_env, start_worker):
    """A worker dies in a chord's header job; the re-queued job carries the chord on, so its body still runs.

    Both backends are Redis (the embedded default starts a local one), where a chord counts its parts in
    Redis itself: no `chord_unlock` task that a killed worker could take down with it.
    """
    from celery import chord

    from jobs.broker.queue import stage_signature

    doomed = start_worker("doomed", epoch_s="0.4")
    signatures = []
    for epochs in ("8", "1", "1"):
        task_id = str(uuid.uuid4())
        job, _ = service.create_job(
            SubmitRequest(stage=Stage.train, overrides={"train.epochs": epochs}), task_id=task_id
        )
        signatures.append((job.id, stage_signature(job.id, Stage.train, task_id, 600)))
    (long_job, header_a), (short_job, header_b), (body_job, body) = signatures
    chord([header_a, header_b])(body)
    wait_for(lambda: metric_count(long_job, "train_loss") >= 2, 60, "the long header job to train", doomed)
    doomed.kill()
    rescuer = start_worker("rescuer", epoch_s="0.05", **TAKEOVER_TIMINGS)
    wait_for(lambda: state(body_job).finished, 90, "the chord's body after the takeover", rescuer)
    jobs = {job_id: service.get_job(job_id) for job_id in (long_job, short_job, body_job)}
    assert all(job.state is JobState.SUCCEEDED for job in jobs.values()), {j: v.error for j, v in jobs.items()}
    assert jobs[long_job].attempts == 2
    assert jobs[body_job].started_at > jobs[long_job].finished_at


def test_a_chord_of_stage_jobs_runs_its_callback_after_the_header(queue_env, start_worker):
    """What the comparison job builds on: a group of jobs, then one job once all of them are done."""
    from celery import chord

    from jobs.broker.queue import stage_signature

    worker = start_worker(epoch_s="0.05")
    signatures = []
    for epochs in ("2", "3", "1"):
        task_id = str(uuid.uuid4())
        job, _ = service.create_job(
            SubmitRequest(stage=Stage.train, overrides={"train.epochs": epochs}), task_id=task_id
        )
        signatures.append((job.id, stage_signature(job.id, Stage.train, task_id, 600)))
    (first, header_a), (second, header_b), (last, body) = signatures
    chord([header_a, header_b])(body)
    wait_for(lambda: state(last).finished, 90, "the chord's body job", worker)
    jobs = {job_id: service.get_job(job_id) for job_id in (first, second, last)}
    assert all(job.state is JobState.SUCCEEDED for job in jobs.values())
    assert jobs[last].started_at > max(jobs[first].finished_at, jobs[second].finished_at)
