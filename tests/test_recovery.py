"""What the worker's sweep repairs: a job whose message never reached the broker, a comparison whose canvas
was lost, and what a worker does when it cannot write (disk full, database unwritable)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_fixtures import BACKENDS, TAKEOVER_TIMINGS, JobEnv, Worker, both_backends, override, run_cli, wait_for
from sqlalchemy import func, select

from db.models import Experiment, Job
from jobs import service
from jobs.broker import queue
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage, StageParams
from jobs.execution.recovery import requeue_lost_jobs, settle_finished_parents
from jobs.pipelines.plan import create_plan, plan_runs
from worker.config import load_config


@pytest.fixture(params=BACKENDS)
def queue_env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    yield from both_backends(request.param, tmp_path, monkeypatch)


@pytest.fixture
def start_worker(queue_env: JobEnv) -> Iterator:
    started: list[Worker] = []

    def start(name: str = "w", **extra_env: str) -> Worker:
        worker = Worker(queue_env, extra_env={"FAKE_EPOCH_S": "0.05", **extra_env}, name=name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _plan(request: SubmitRequest):
    """The comparison's rows, without sending its canvas."""
    config = load_config(request.preset, request.overrides).to_dict()
    return create_plan(request, config, plan_runs(request, config), with_generation=False)


def _state(job_id: int) -> JobState:
    return service.get_job(job_id).state


def test_a_job_whose_message_never_reached_the_broker_runs_once(queue_env, start_worker):
    # The row is written and declared runnable, but no message is sent: what a publish lost in transit leaves.
    job, _ = service.create_job(
        SubmitRequest(stage=Stage.train, overrides={"train.epochs": "2"}), task_id=str(uuid.uuid4()), after=[]
    )
    assert job.celery_task_id not in queue.pending_task_ids(reserved_after=0)
    worker = start_worker()
    wait_for(lambda: _state(job.id).finished, 60, "the sweep to send the lost job again", worker)
    final = service.get_job(job.id)
    assert final.state is JobState.SUCCEEDED and final.attempts == 1
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Experiment).where(Experiment.job_id == job.id)) == 1
    assert "sent again" in worker.output()


def test_the_sweep_leaves_a_queued_job_alone_while_its_message_waits(queue_env):
    job = service.submit(SubmitRequest(stage=Stage.train))  # no worker: the message waits in the queue
    time.sleep(3.5)  # past JOBS_REQUEUE_AFTER_S
    assert requeue_lost_jobs() == []
    assert queue.pending_task_ids(reserved_after=0) == {job.celery_task_id}


def test_a_comparison_whose_canvas_was_lost_runs_in_order_and_settles(queue_env, start_worker):
    """Nothing of the canvas reaches the broker (as when the worker holding the chord callback dies): the
    sweep sends each child once the ones it waits for have ended, and the report settles the parent."""
    request = SubmitRequest(
        stage=Stage.compare, preset="smoke", overrides={"train.epochs": "1"}, params=StageParams(with_generation=False)
    )
    plan = _plan(request)
    worker = start_worker()
    wait_for(lambda: _state(plan.parent_id).finished, 120, "the comparison to settle", worker)
    parent = service.get_job(plan.parent_id)
    assert parent.state is JobState.SUCCEEDED, parent.error
    children = {child.id: child for child in parent.children}
    assert all(child.state is JobState.SUCCEEDED and child.attempts == 1 for child in children.values())
    [prepare], report = [children[job_id] for job_id in plan.prepare_ids], children[plan.report_id]
    trains = [children[job_id] for branch in plan.branches for _, job_id in branch.steps]
    assert all(train.started_at >= prepare.finished_at for train in trains)
    assert report.started_at >= max(train.finished_at for train in trains)
    assert parent.artifacts["html"].endswith("report.html")


def test_a_parent_whose_children_ended_without_a_report_is_settled_failed(queue_env):
    plan = _plan(SubmitRequest(stage=Stage.compare, preset="smoke", params=StageParams(with_generation=False)))
    assert settle_finished_parents() == []  # children still queued
    with transaction() as session:
        for child in session.scalars(select(Job).where(Job.parent_id == plan.parent_id)):
            child.state = JobState.FAILED.value if child.id == plan.report_id else JobState.SUCCEEDED.value
            child.error = "worker lost: the job was started 3 times" if child.id == plan.report_id else None
    assert settle_finished_parents() == [plan.parent_id]
    parent = service.get_job(plan.parent_id)
    assert parent.state is JobState.FAILED
    assert f"job {plan.report_id} (report) FAILED: worker lost" in parent.error


def test_wait_gives_up_with_a_hint_when_no_worker_answers(queue_env, monkeypatch):
    override(queue_env, monkeypatch, TAKEOVER_TIMINGS)  # no worker at all: no heartbeat to starve
    started = time.monotonic()
    completed = run_cli(queue_env, "submit", "train", "--preset", "smoke", "--wait", timeout=60)
    assert completed.returncode == 1
    assert "no worker has answered" in completed.stderr and "`jobs worker`" in completed.stderr
    assert "stays QUEUED" in completed.stderr
    assert time.monotonic() - started < 30
    [job] = service.list_jobs()
    assert job.state is JobState.QUEUED  # still there for a worker that starts later


def test_an_unwritable_artifacts_folder_fails_the_job_naming_the_path(queue_env, start_worker, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifacts folder should be")
    worker = start_worker(JOBS_ARTIFACTS_DIR=str(blocker / "artifacts"))
    job = service.submit(SubmitRequest(stage=Stage.train))
    wait_for(lambda: _state(job.id).finished, 60, "the job to fail", worker)
    final = service.get_job(job.id)
    assert final.state is JobState.FAILED
    assert str(blocker) in final.error
    # The worker survived and takes the next job.
    fine = service.submit(SubmitRequest(stage=Stage.prepare_data))
    wait_for(lambda: _state(fine.id).finished, 60, "the next job", worker)
    assert worker.process.poll() is None


def test_a_failure_the_database_refused_is_recorded_by_the_sweep_not_run_again(queue_env):
    from datetime import timedelta

    from db.models import utcnow
    from jobs.execution import lastwords
    from jobs.execution.claim import sweep_stale_jobs

    job, _ = service.create_job(SubmitRequest(stage=Stage.train), task_id=str(uuid.uuid4()), after=[])
    with transaction() as session:  # a run that died after its last heartbeat, its final write refused
        row = session.get(Job, job.id)
        row.state, row.attempts, row.worker_id = JobState.RUNNING.value, 1, "gone:1:x"
        row.started_at = row.heartbeat_at = utcnow() - timedelta(minutes=5)
    error = "CheckpointWriteError: could not write checkpoint /data/run/last.ckpt: No space left on device"
    lastwords.leave(job.id, JobState.FAILED.value, error)

    assert sweep_stale_jobs() == []  # settled, not re-queued
    final = service.get_job(job.id)
    assert final.state is JobState.FAILED and final.error == error and final.attempts == 1
    assert lastwords.read(job.id) is None


def test_a_refused_failure_of_a_job_re_queued_meanwhile_is_recorded_at_its_claim(queue_env):
    from jobs.execution import lastwords
    from jobs.execution.claim import WorkerIdentity, claim

    # A sweep flipped the job back to QUEUED while its run was still retrying its final write.
    job, _ = service.create_job(SubmitRequest(stage=Stage.train), task_id=str(uuid.uuid4()), after=[])
    lastwords.leave(job.id, JobState.FAILED.value, "could not write checkpoint /data/last.ckpt: disk full")
    claimed = claim(job.id, WorkerIdentity.current())
    assert not claimed.acquired
    final = service.get_job(job.id)
    assert final.state is JobState.FAILED and "could not write checkpoint /data/last.ckpt" in final.error
