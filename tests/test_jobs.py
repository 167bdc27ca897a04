"""The job service, claims, the runner and the database recorder, in-process on the embedded SQLite default."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from jobs_fixtures import REPO, starts, use_fake_stages
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from db.models import Experiment, Job, Metric, utcnow
from jobs import service
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage, StageParams
from jobs.execution.claim import Heartbeat, WorkerIdentity, claim, sweep_stale_jobs
from jobs.execution.recorder import DatabaseRecorder
from jobs.execution.runner import execute_job


@pytest.fixture
def fake(job_env, monkeypatch):
    use_fake_stages(monkeypatch)
    return job_env


def new_job(epochs: int = 3, **request) -> int:
    job, created = service.create_job(
        SubmitRequest(stage=Stage.train, overrides={"train.epochs": str(epochs)}, **request)
    )
    assert created
    return job.id


def run_in_background(job_id: int, until_epochs: int) -> tuple[threading.Thread, dict]:
    """Run the job in a thread; return once it recorded `until_epochs` train losses (or after 20 s).
    The outcome lands in the returned dict under "o" when the run ends."""
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(o=execute_job(job_id, WorkerIdentity.current())))
    runner.start()
    deadline = time.monotonic() + 20
    while count(Metric, name="train_loss") < until_epochs and time.monotonic() < deadline:
        time.sleep(0.05)
    return runner, outcome


def make_stale(job_id: int, seconds: float = 60) -> None:
    with transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def count(model, **where) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query)


# --- submit --------------------------------------------------------------------------------------------


def test_submit_records_a_queued_job_with_its_resolved_config(job_env):
    job = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.epochs": "2", "peft.method": "qlora"}))
    assert job.state is JobState.QUEUED
    assert job.config["train"]["epochs"] == 2 and job.config["peft"]["method"] == "qlora"
    assert job.celery_task_id and job.attempts == 0
    assert service.get_job(job.id).id == job.id
    assert [j.id for j in service.list_jobs(JobState.QUEUED)] == [job.id]
    assert service.list_jobs(JobState.RUNNING) == []


def test_the_same_request_with_the_same_idempotency_key_returns_the_first_job(job_env):
    first = service.submit(SubmitRequest(stage=Stage.train, idempotency_key="nightly-1", overrides={"seed": "7"}))
    again = service.submit(SubmitRequest(stage=Stage.train, idempotency_key="nightly-1", overrides={"seed": "7"}))
    assert again.id == first.id
    assert count(Job) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"stage": Stage.train, "overrides": {"seed": "8"}},
        {"stage": Stage.prepare_data, "overrides": {"seed": "7"}},
        {"stage": Stage.compare, "overrides": {"seed": "7"}},
    ],
)
def test_an_idempotency_key_reused_for_another_request_is_a_conflict_naming_the_first_job(job_env, other):
    first = service.submit(SubmitRequest(stage=Stage.train, idempotency_key="nightly-2", overrides={"seed": "7"}))

    with pytest.raises(service.IdempotencyConflict) as conflict:
        service.submit(SubmitRequest(idempotency_key="nightly-2", **other))

    assert conflict.value.job_id == first.id and f"job {first.id}" in str(conflict.value)
    assert count(Job) == 1


@pytest.mark.parametrize(
    ("request_kwargs", "fragment"),
    [
        ({"stage": Stage.train, "overrides": {"peft.method": "dora"}}, "'peft.method'"),
        ({"stage": Stage.train, "overrides": {"train.nope": "1"}}, "unknown config key 'train.nope'"),
        ({"stage": Stage.train, "preset": "nope"}, "unknown preset 'nope'"),
        ({"stage": Stage.evaluate}, "needs --checkpoint"),
        ({"stage": Stage.compare, "overrides": {"peft.r": "0"}}, "'peft.r'"),
        ({"stage": Stage.train, "parent_id": 999}, "parent_id"),
    ],
)
def test_invalid_requests_name_the_problem_and_record_nothing(job_env, request_kwargs, fragment):
    with pytest.raises(service.InvalidRequest, match=fragment.replace("(", r"\(")):
        service.submit(SubmitRequest(**request_kwargs))
    assert count(Job) == 0


def test_a_broker_that_refuses_the_job_fails_it(job_env, monkeypatch):
    from jobs.core.settings import reset_settings

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:9/0")  # nothing listens on the discard port
    reset_settings()
    with pytest.raises(service.BrokerUnavailable, match="did not accept"):
        service.submit(SubmitRequest(stage=Stage.train))
    [job] = service.list_jobs()
    assert job.state is JobState.FAILED and "did not accept" in job.error
    assert service.health()["broker"].startswith("error")
    assert service.health()["database"] == "ok"


def test_unknown_ids_raise_not_found(job_env):
    with pytest.raises(service.JobNotFound):
        service.get_job(42)
    with pytest.raises(service.JobNotFound):
        service.cancel(42)
    with pytest.raises(service.ExperimentNotFound):
        service.experiment_metrics(42)


# --- claims --------------------------------------------------------------------------------------------


def test_a_job_is_claimed_once_and_a_redelivery_of_a_live_job_does_nothing(job_env):
    job_id = new_job()
    first = claim(job_id, WorkerIdentity.current())
    assert first.acquired and first.attempt == 1 and not first.takeover
    second = claim(job_id, WorkerIdentity.current())
    assert not second.acquired and "fresh" in second.reason
    assert service.get_job(job_id).attempts == 1


def test_racing_workers_get_the_job_exactly_once(job_env):
    job_id = new_job()
    results, barrier = [], threading.Barrier(4)

    def race():
        barrier.wait()
        results.append(claim(job_id, WorkerIdentity.current()).acquired)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]


def test_a_stale_job_is_taken_over_until_attempts_run_out(job_env):
    job_id = new_job()
    assert claim(job_id, WorkerIdentity.current()).acquired
    for attempt in (2, 3):
        make_stale(job_id)
        taken = claim(job_id, WorkerIdentity.current())
        assert taken.acquired and taken.takeover and taken.attempt == attempt
    make_stale(job_id)
    refused = claim(job_id, WorkerIdentity.current())
    assert not refused.acquired
    job = service.get_job(job_id)
    assert job.state is JobState.FAILED and "worker lost" in job.error and job.attempts == 3


def test_finished_and_cancelled_jobs_are_never_claimed(job_env):
    job_id = new_job()
    service.cancel(job_id)
    assert service.get_job(job_id).state is JobState.CANCELLED
    assert not claim(job_id, WorkerIdentity.current()).acquired


def test_sweep_requeues_stale_jobs_and_settles_the_rest(job_env):
    live, stale, exhausted, cancelled = (new_job() for _ in range(4))
    for job_id in (live, stale, exhausted, cancelled):
        assert claim(job_id, WorkerIdentity.current()).acquired
    with transaction() as session:
        session.execute(update(Job).where(Job.id == exhausted).values(attempts=3))
        session.execute(update(Job).where(Job.id == cancelled).values(cancel_requested=True))
    old_task = service.get_job(stale).celery_task_id
    for job_id in (stale, exhausted, cancelled):
        make_stale(job_id)
    assert sweep_stale_jobs() == [stale]
    requeued = service.get_job(stale)
    assert requeued.state is JobState.QUEUED and requeued.celery_task_id != old_task
    assert service.get_job(live).state is JobState.RUNNING
    assert service.get_job(exhausted).state is JobState.FAILED
    assert service.get_job(cancelled).state is JobState.CANCELLED
    again = claim(stale, WorkerIdentity.current())
    assert again.acquired and again.attempt == 2


def test_heartbeat_keeps_a_job_fresh_and_notices_a_takeover(job_env):
    job_id = new_job()
    owner = WorkerIdentity.current()
    assert claim(job_id, owner).acquired
    before = service.get_job(job_id)
    with Heartbeat(job_id, owner, interval_s=0.05) as heartbeat:
        time.sleep(0.3)
        with transaction() as session:
            beat_at = session.scalar(select(Job.heartbeat_at).where(Job.id == job_id))
        assert beat_at > before.started_at
        assert not heartbeat.lost.is_set()
        with transaction() as session:  # another worker takes the job
            session.execute(update(Job).where(Job.id == job_id).values(worker_id="elsewhere"))
        assert heartbeat.lost.wait(2)


# --- running -------------------------------------------------------------------------------------------


def test_a_run_records_the_experiment_metrics_progress_and_log(fake):
    job_id = new_job(epochs=3)
    outcome = execute_job(job_id, WorkerIdentity.current())
    assert outcome.state is JobState.SUCCEEDED and outcome.ran
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.finished_at >= job.started_at
    assert job.progress == {"epoch": 2, "step": 12, "total": 12, "percent": 100.0}
    [experiment] = service.list_experiments(stage="train")
    assert job.experiment_ids == [experiment.id]
    assert experiment.status == "succeeded" and experiment.peft_method == "lora"
    assert experiment.versions["torch"] and experiment.versions["lightning"]
    # The lock fixes every other installed version: its digest names the whole environment.
    lock_digest = "sha256:" + hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert experiment.versions["requirements.lock"] == lock_digest
    assert len(experiment.config_hash) == 16 and experiment.git_commit
    assert experiment.metrics["samples_per_s"] == 123.5 and experiment.checkpoint_path.endswith("last.json")
    with transaction() as session:
        row = session.get(Experiment, experiment.id)
        assert (row.samples_per_s, row.peak_ram_mb, row.trainable_params, row.best_val_loss) == (
            123.5,
            321.0,
            1000,
            2 / 3,
        )
    rows = service.experiment_metrics(experiment.id)
    assert len(rows) == 9  # 3 epochs x (train_loss, val_loss, i2t_recall@1)
    assert [r.value for r in rows if r.name == "train_loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    log_text = service.read_logs(job_id)
    assert "fake stage starting at epoch 0" in log_text and "fake stage: epoch 2 done" in log_text
    assert service.read_logs(job_id, tail_lines=1).count("\n") == 1
    assert job.artifacts["run_dir"].startswith(str(fake.artifacts)) and "log" in job.artifacts


@pytest.mark.parametrize(
    ("column", "change", "key"),
    [
        ("config", {"model": {"siglip": "configs/../../../../etc", "build_tiny_fixtures": False}}, "model.siglip"),
        ("config", {"data": {"source": "local", "data_dir": "/etc"}}, "data.data_dir"),
        ("params", {"checkpoint": "/etc/passwd"}, "params.checkpoint"),
    ],
)
def test_a_worker_never_opens_a_file_outside_the_roots_even_from_a_row_written_by_hand(
    fake, monkeypatch, column, change, key
):
    opened: list = []
    monkeypatch.setattr(
        "jobs.execution.runner.stage_function", lambda stage: lambda *args, **kwargs: opened.append(args)
    )
    job_id = new_job(epochs=1)
    with transaction() as session:
        job = session.get(Job, job_id)
        stored = dict(getattr(job, column))
        for section, values in change.items():
            stored[section] = {**stored[section], **values} if isinstance(values, dict) else values
        setattr(job, column, stored)

    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED

    assert opened == []
    error = service.get_job(job_id).error
    assert f"{key}: " in error and "outside the allowed roots" in error


def test_bad_input_found_by_a_stage_is_one_line_and_keeps_the_metrics(fake, monkeypatch):
    # A ConfigError is the user's input named with its fix (e.g. a dataset folder not in its layout): a traceback
    # would bury that line in the job's error, the CLI's output and `jobs status`.
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "1")
    monkeypatch.setenv("FAKE_FAIL_AS", "config")
    job_id = new_job(epochs=3)
    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED
    error = service.get_job(job_id).error
    assert error == "ConfigError: fake bad input at epoch 1: name the problem and the fix"
    assert count(Metric, name="train_loss") == 1


def test_a_failing_stage_ends_failed_with_the_traceback_and_keeps_its_metrics(fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "2")
    job_id = new_job(epochs=4)
    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED
    job = service.get_job(job_id)
    assert job.state is JobState.FAILED
    assert job.error.startswith("RuntimeError: fake failure at epoch 2")
    assert "Traceback" in job.error and "fake_stage" in job.error
    assert count(Metric, name="train_loss") == 2
    assert service.list_experiments()[0].status == "failed"


def test_a_running_job_cancelled_stops_cooperatively_and_keeps_its_metrics(fake, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.3")
    job_id = new_job(epochs=30)
    runner, outcome = run_in_background(job_id, until_epochs=2)
    assert service.cancel(job_id).cancel_requested
    runner.join(20)
    assert outcome["o"].state is JobState.CANCELLED
    job = service.get_job(job_id)
    assert job.state is JobState.CANCELLED
    kept = count(Metric, name="train_loss")
    assert 2 <= kept < 30
    assert service.list_experiments()[0].status == "cancelled"


def test_a_takeover_resumes_from_the_checkpoint_without_duplicating_rows(fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "2")
    job_id = new_job(epochs=4)
    # A first run dies at epoch 2 without finishing the job: simulate a lost worker by reopening the row.
    execute_job(job_id, WorkerIdentity.current())
    with transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(state="RUNNING", error=None, finished_at=None))
    make_stale(job_id)
    monkeypatch.delenv("FAKE_FAIL_EPOCH")
    outcome = execute_job(job_id, WorkerIdentity.current())
    assert outcome.state is JobState.SUCCEEDED and outcome.result.status == "succeeded"
    job = service.get_job(job_id)
    assert job.attempts == 2 and job.config["train"]["resume"] is False  # the submitted config is unchanged
    assert starts(job.artifacts["run_dir"]) == [0, 2]
    assert count(Experiment) == 1
    assert count(Metric, name="train_loss") == 4 and count(Metric) == 12


def test_resume_on_a_new_job_continues_the_latest_job_with_the_same_config(fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "2")
    failed = new_job(epochs=4)
    assert execute_job(failed, WorkerIdentity.current()).state is JobState.FAILED
    monkeypatch.delenv("FAKE_FAIL_EPOCH")
    requests = (SubmitRequest(stage=Stage.train, overrides={"train.epochs": n, "train.resume": "true"}) for n in "54")
    other, resumed = (service.create_job(request)[0].id for request in requests)
    assert execute_job(resumed, WorkerIdentity.current()).state is JobState.SUCCEEDED
    run_dir = service.get_job(failed).artifacts["run_dir"]
    assert service.get_job(resumed).artifacts["run_dir"] == run_dir
    assert starts(run_dir) == [0, 2]  # the second job began where the failed one stopped
    # A different config has nothing to resume: it starts fresh in its own folder.
    assert execute_job(other, WorkerIdentity.current()).state is JobState.SUCCEEDED
    assert starts(service.get_job(other).artifacts["run_dir"]) == [0]


def test_resume_refuses_an_earlier_job_with_the_same_config_that_has_not_ended(fake):
    from jobs_fixtures import invoke

    active = new_job(epochs=4)  # queued; then running
    resume = SubmitRequest(stage=Stage.train, overrides={"train.epochs": "4", "train.resume": "true"})
    for state in (JobState.QUEUED, JobState.RUNNING):
        with transaction() as session:
            session.execute(update(Job).where(Job.id == active).values(state=state.value))
        with pytest.raises(service.InvalidRequest, match=f"earlier job {active} with this config is {state.value}"):
            service.create_job(resume)
        result = invoke("submit", "train", "--epochs", "4", "--resume")
        assert result.exit_code == 2 and f"job {active}" in result.output and "jobs cancel" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert count(Job) == 1  # nothing recorded for a refused submission
    with transaction() as session:
        session.execute(update(Job).where(Job.id == active).values(state=JobState.FAILED.value))
    assert service.create_job(resume)[1]  # an ended one is continued


def test_a_run_that_lost_its_job_writes_nothing_more(fake, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_S", "0.2")
    job_id = new_job(epochs=30)
    runner, outcome = run_in_background(job_id, until_epochs=1)
    with transaction() as session:  # another worker took the job over; what was recorded until then
        session.execute(update(Job).where(Job.id == job_id).values(worker_id="other", attempts=2))
        recorded = session.scalar(select(func.count()).select_from(Metric))
        progress = session.scalar(select(Job.progress).where(Job.id == job_id))
    runner.join(20)
    assert not runner.is_alive()
    assert outcome["o"].state is None and "attempt 1" in outcome["o"].reason and "fenced off" in outcome["o"].reason
    job = service.get_job(job_id)
    assert job.state is JobState.RUNNING and job.finished_at is None  # left for its new owner
    assert service.list_experiments()[0].status == "running"  # and so is the experiment
    assert count(Metric) == recorded and job.progress == progress  # not one row or progress write after it


def test_an_epoch_is_recorded_once_its_upload_succeeded_and_a_failed_run_keeps_the_waiting_ones(fake, monkeypatch):
    import jobs.execution.artifacts

    bucket_up = [False]
    recorder = DatabaseRecorder(new_job(), experiment_id=0, before_epoch=lambda: bucket_up[0])
    recorder._write_metrics = lambda metrics, **where: written.append((where["epoch"], dict(metrics)))
    written: list = []
    recorder.log_metrics({"val_loss": 2.0}, split="val", epoch=0)
    assert written == []  # its checkpoint is not in the bucket: the epoch waits
    bucket_up[0] = True
    recorder.log_metrics({"val_loss": 1.0}, split="val", epoch=1)
    assert written == [(0, {"val_loss": 2.0}), (1, {"val_loss": 1.0})]

    uploads: list = []
    monkeypatch.setattr(jobs.execution.artifacts, "epoch_upload", lambda *a, **k: lambda: uploads.append(1) or False)
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "2")
    job_id = new_job(epochs=5)
    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED
    assert len(uploads) == 4  # each record of epochs 0 and 1 (train, val) tried the upload
    [experiment] = [e for e in service.list_experiments() if e.job_id == job_id]
    assert {m.epoch for m in service.experiment_metrics(experiment.id)} == {0, 1}  # kept though never uploaded


def test_a_fenced_recorder_refuses_every_write_once_another_attempt_owns_the_job(fake):
    from jobs.execution.fence import Fence
    from worker.recorder import JobLost

    job_id = new_job()
    owner = WorkerIdentity.current()
    assert claim(job_id, owner).acquired
    with transaction() as session:
        experiment = Experiment(job_id=job_id, stage="train", config_hash="x")
        session.add(experiment)
        session.flush()
        experiment_id = experiment.id
    fence = Fence(job_id, owner.worker_id, attempt=1)
    recorder = DatabaseRecorder(job_id, experiment_id, fence=fence, min_interval_s=0)
    recorder.log_metrics({"loss": 1.0}, split="val", epoch=0)
    recorder.progress(epoch=0, step=1, total=10)
    make_stale(job_id)
    assert claim(job_id, owner).attempt == 2  # the same worker process, a new attempt: the old one is fenced
    for write in (
        lambda: recorder.log_metrics({"loss": 0.5}, split="val", epoch=0),
        lambda: recorder.log_metrics({"loss": 0.5}, split="val", epoch=1),
        lambda: recorder.progress(epoch=1, step=2, total=10),
        recorder.ensure_owner,
    ):
        with pytest.raises(JobLost, match=f"job {job_id}: attempt 1 .* fenced off .*now attempt 2"):
            write()
    assert [(m.epoch, m.value) for m in service.experiment_metrics(experiment_id)] == [(0, 1.0)]
    assert service.get_job(job_id).progress["step"] == 1


# --- recorder ------------------------------------------------------------------------------------------


def test_recorder_overwrites_a_point_and_retries_failed_writes(fake, monkeypatch):
    job_id = new_job()
    assert claim(job_id, WorkerIdentity.current()).acquired
    with transaction() as session:
        experiment = Experiment(job_id=job_id, stage="train", config_hash="x")
        session.add(experiment)
        session.flush()
        experiment_id = experiment.id
    recorder = DatabaseRecorder(job_id, experiment_id)
    recorder.log_metrics({"loss": 1.0}, split="val", epoch=0)
    recorder.log_metrics({"loss": 0.5}, split="val", epoch=0)
    recorder.log_metrics({"loss": float("nan")}, split="val")
    values = [(m.epoch, m.value) for m in service.experiment_metrics(experiment_id)]
    assert values[0] == (None, pytest.approx(float("nan"), nan_ok=True)) and values[1] == (0, 0.5)

    import db.queries
    import jobs.execution.recorder

    real, failures = db.queries.upsert_metrics, []

    def flaky(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs.execution.recorder, "upsert_metrics", flaky)
    recorder.log_metrics({"loss": 0.25}, split="val", epoch=1)
    assert len(failures) == 2 and count(Metric, epoch=1) == 1

    from tenacity import stop_after_attempt, wait_none

    monkeypatch.setattr(DatabaseRecorder._write_metrics.retry, "stop", stop_after_attempt(3))
    monkeypatch.setattr(DatabaseRecorder._write_metrics.retry, "wait", wait_none())

    def broken(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(jobs.execution.recorder, "upsert_metrics", broken)
    with pytest.raises(OperationalError):  # never dropped silently
        recorder.log_metrics({"loss": 0.1}, split="val", epoch=2)


def test_recorder_progress_is_throttled_and_cancel_is_read_from_the_row(fake):
    job_id = new_job()
    recorder = DatabaseRecorder(job_id, experiment_id=0, min_interval_s=60)
    seen = []
    recorder.on_progress = seen.append
    recorder.progress(epoch=0, step=1, total=10)
    recorder.progress(epoch=0, step=2, total=10)  # within the interval: skipped
    recorder.progress(epoch=1, step=10, total=10)  # the last step always goes through
    assert [p["step"] for p in seen] == [1, 10]
    assert service.get_job(job_id).progress["percent"] == 100.0
    assert recorder.cancelled() is False
    recorder.min_interval_s = 0
    service.cancel(job_id)
    assert recorder.cancelled() is True


def test_stage_params_reach_the_job_row(job_env):
    job, _ = service.create_job(
        SubmitRequest(stage=Stage.evaluate, params=StageParams(checkpoint="var/x.ckpt", split="val"))
    )
    # var/ means the var root; the row keeps the absolute file that was checked against the roots.
    from worker.config import RunConfig

    assert job.params == {"checkpoint": str(RunConfig().var_path("x.ckpt").resolve()), "split": "val"}


def test_time_limits_come_from_the_job_config(job_env, monkeypatch):
    from jobs.broker.celery_app import app_for

    sent = {}

    def send_task(self, name, args=None, kwargs=None, **options):
        sent.update(name=name, args=list(args), **options)

    monkeypatch.setattr(type(app_for()), "send_task", send_task)
    job = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.max_time_s": "600"}))
    assert sent["name"] == "train" and sent["queue"] == "gpu" and sent["args"] == [job.id]
    assert sent["soft_time_limit"] == 600 and sent["time_limit"] == 600 + 120
    service.submit(SubmitRequest(stage=Stage.prepare_data))
    assert sent["queue"] == "cpu"


def test_a_job_past_its_time_limit_ends_failed(fake, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    import jobs.execution.runner

    def too_slow(config, recorder):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(jobs.execution.runner, "stage_function", lambda stage: too_slow)
    job_id = new_job()
    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED
    assert service.get_job(job_id).error.startswith("time limit: the job ran longer than train.max_time_s=")


def test_cancelling_a_parent_cancels_its_children(job_env):
    parent = new_job()
    children = [new_job(parent_id=parent) for _ in range(2)]
    assert claim(children[0], WorkerIdentity.current()).acquired
    view = service.cancel(parent)
    assert view.state is JobState.CANCELLED
    assert [child.id for child in view.children] == children
    assert service.get_job(children[1]).state is JobState.CANCELLED
    running = service.get_job(children[0])
    assert running.state is JobState.RUNNING and running.cancel_requested


def test_only_json_messages_are_accepted():
    from jobs.broker.celery_app import app

    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert (app.conf.worker_prefetch_multiplier, app.conf.worker_concurrency, app.conf.worker_max_tasks_per_child) == (
        1,
        1,
        1,
    )


def test_a_job_killed_at_its_time_limit_is_not_run_again(job_env):
    job, _ = service.create_job(SubmitRequest(stage=Stage.train, overrides={"train.max_time_s": "60"}))
    assert claim(job.id, WorkerIdentity.current()).acquired
    started = utcnow() - timedelta(seconds=200)
    with transaction() as session:  # it beat for its whole 60 s, then Celery's hard limit killed it
        session.execute(
            update(Job).where(Job.id == job.id).values(started_at=started, heartbeat_at=started + timedelta(seconds=61))
        )
    assert sweep_stale_jobs() == []
    failed = service.get_job(job.id)
    assert failed.state is JobState.FAILED and failed.error.startswith("time limit")


def test_a_job_whose_config_no_longer_loads_ends_failed_with_the_reason(fake):
    job_id = new_job()
    with transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(config={"train": {"epochs": "many"}}))
    assert execute_job(job_id, WorkerIdentity.current()).state is JobState.FAILED
    error = service.get_job(job_id).error
    assert error.startswith("ValidationError") and "epochs" in error


def test_result_values_are_stored_as_json_whatever_their_type():
    import numpy as np

    from jobs.execution.recorder import json_safe

    raw = {"loss": np.float32(0.5), "bad": float("inf"), "path": Path("/x"), "n": [np.int64(3), None, True]}
    assert json_safe(raw) == {"loss": 0.5, "bad": None, "path": "/x", "n": [3, None, True]}


def test_sweep_resends_the_stored_delivery_so_a_canvas_continues(job_env, monkeypatch):
    from jobs.broker.celery_app import app_for

    job_id = new_job()
    delivery = {
        "task": "train",
        "args": [job_id],
        "kwargs": {},
        "options": {"task_id": "original-id", "chord": {"task": "report"}, "group_id": "g-1", "queue": "gpu"},
    }
    assert claim(job_id, WorkerIdentity.current(), delivery=delivery).acquired
    make_stale(job_id)
    sent = {}

    def send_task(self, name, args=None, kwargs=None, **options):
        sent.update(name=name, args=list(args), **options)

    monkeypatch.setattr(type(app_for()), "send_task", send_task)
    assert sweep_stale_jobs() == [job_id]
    assert sent == {"name": "train", "args": [job_id], **delivery["options"]}
    assert service.get_job(job_id).celery_task_id == "original-id"


def test_a_data_root_only_the_submitting_shell_has_fails_naming_the_worker_host_in_one_line(
    job_env, tmp_path, monkeypatch
):
    import socket

    from jobs.core.settings import reset_settings

    dataset = tmp_path / "datasets" / "iu-xray"
    dataset.mkdir(parents=True)
    monkeypatch.setenv("MEDVL_DATA_ROOTS", str(tmp_path / "datasets"))  # the submitting shell's setting
    reset_settings()
    job = service.create_job(SubmitRequest(stage=Stage.train, overrides={"data.data_dir": str(dataset)}))[0]
    monkeypatch.delenv("MEDVL_DATA_ROOTS")  # a worker started without it
    reset_settings()

    assert execute_job(job.id, WorkerIdentity.current()).state is JobState.FAILED

    error = service.get_job(job.id).error
    assert len(error.splitlines()) == 1, error  # no traceback: nothing crashed
    assert error.startswith(f"on worker host {socket.gethostname()}: data.data_dir: ")
    assert "the worker's setting: set MEDVL_DATA_ROOTS in the worker's environment or .env" in error


def test_a_worker_refuses_an_input_missing_on_its_host_in_one_line(job_env, tmp_path):
    # A submit leaves a path missing here to the worker (a queued job may name what another job will write).
    checkpoint = job_env.artifacts / "never-written.ckpt"
    job = service.create_job(SubmitRequest(stage=Stage.evaluate, params=StageParams(checkpoint=str(checkpoint))))[0]

    assert execute_job(job.id, WorkerIdentity.current()).state is JobState.FAILED

    error = service.get_job(job.id).error
    assert len(error.splitlines()) == 1 and "params.checkpoint" in error and "does not exist" in error
