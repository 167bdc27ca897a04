"""Fencing and takeover with the real smoke `train` stage, over two hosts that share the database, the broker
and an artifacts bucket (moto's server) but no disk.

A worker paused by the OS (SIGSTOP) past the staleness limit loses its job to the other host; woken up
(SIGCONT), it must write nothing more: no metric row, no progress, no bucket object. A worker killed (kill -9)
is taken over on the other host, which must continue with the run's best checkpoint as it was. A bucket away
past the final publish's patience leaves the finished run for a retry of the publish alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from jobs_fixtures import REAL_STAGE_TIMINGS, JobEnv, Worker, embedded_variables, wait_for
from storage_fixtures import OutageProxy, S3Server

from jobs import service
from jobs.core.database import dispose_engines
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.settings import reset_settings
from jobs.core.stages import Stage
from jobs.core.storage import bucket, local_copy
from jobs.execution.claim import WorkerIdentity
from jobs.execution.runner import execute_job

pytestmark = pytest.mark.slow

# The job's worker goes stale for the other host after this long without a heartbeat: short, so the test does
# not wait minutes, and only the second host has it, so the first never hands its own live job away.
TAKEOVER_STALE_S = "6"
# Enough epochs for a pause and a takeover in the middle of the run; a few batches each keep the test short.
EPOCHS = 8
SHORT = {"train.limit_train_batches": "4"}
# Longer than the minute an upload used to be retried for before the run failed.
AWAY_S = 70
# The final publish's patience in the publish-retry test: short, so the test does not wait half an hour.
PUBLISH_PATIENCE_S = "3"


@pytest.fixture
def hosts(smoke_prepared, smoke_config, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The job system on this process (a third host), with the smoke data and models every host has."""
    variables = {
        **embedded_variables(tmp_path),
        **_host_folders(tmp_path, "test"),
        "MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir)),
        **REAL_STAGE_TIMINGS,
        **s3.variables(s3.new_bucket()),
    }
    env = JobEnv(tmp_path, variables)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    dispose_engines()
    yield env
    dispose_engines()
    reset_settings()


def _host_folders(root: Path, name: str) -> dict[str, str]:
    return {"JOBS_ARTIFACTS_DIR": str(root / name / "artifacts"), "JOBS_LOG_DIR": str(root / name / "logs")}


def _worker(env: JobEnv, name: str, **extra: str) -> Worker:
    return Worker(env, fake=False, extra_env={**_host_folders(env.root, name), **extra}, name=name)


def _submit(**overrides: str) -> int:
    settings = {"train.epochs": str(EPOCHS), "train.early_stopping_patience": "100", **SHORT, **overrides}
    return service.submit(SubmitRequest(stage=Stage.train, overrides=settings)).id


def _epoch(job_id: int) -> int:
    return int((service.get_job(job_id).progress or {}).get("epoch", -1))


def _signal_group(worker: Worker, sig: signal.Signals) -> None:
    os.killpg(worker.process.pid, sig)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _bucket_objects(job_id: int) -> dict[str, bytes]:
    """Every object of the job's run folder and its log, by URL."""
    store = bucket()
    job = service.get_job(job_id)
    fs = store.fs()
    keys = [key for key in fs.find(job.artifacts["run_dir"].removeprefix("s3://"), refresh=True)]
    log_key = job.artifacts["log"].removeprefix("s3://")
    return {f"s3://{key}": fs.cat_file(key) for key in [*keys, log_key]}


def _checkpoint_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _epoch_metrics(last: Path) -> list[dict[str, float]]:
    state = _checkpoint_state(last)["callbacks"]
    return next(value["epoch_metrics"] for key, value in state.items() if key.startswith("RecorderCallback"))


def _assert_true_best(experiment, rows, objects: dict[str, bytes]) -> None:
    """The best checkpoint is the epoch with the lowest recorded val_loss, and the only best file in the bucket."""
    val_losses = {m.epoch: m.value for m in rows if m.name == "val_loss"}
    best_epoch = min(val_losses, key=val_losses.__getitem__)
    assert experiment.metrics["best_val_loss"] == pytest.approx(val_losses[best_epoch])
    assert Path(experiment.checkpoint_path).name == f"best-epoch={best_epoch:02d}.ckpt", val_losses
    bests = sorted(Path(url).name for url in objects if Path(url).name.startswith("best-"))
    assert bests == [f"best-epoch={best_epoch:02d}.ckpt"], (bests, val_losses)


def test_a_paused_worker_woken_after_a_takeover_writes_nothing(hosts: JobEnv) -> None:
    env = hosts
    first = _worker(env, "a")
    second = None
    try:
        job_id = _submit()
        wait_for(lambda: _epoch(job_id) >= 2, 300, "two epochs on host a", first)
        _signal_group(first, signal.SIGSTOP)
        paused_at = _epoch(job_id)
        second = _worker(env, "b", JOBS_STALE_AFTER_S=TAKEOVER_STALE_S)
        wait_for(lambda: service.get_job(job_id).attempts == 2, 300, "host b to take the job over", second)
        wait_for(lambda: _epoch(job_id) >= paused_at + 2, 300, "host b past the paused epoch", second)
        _signal_group(first, signal.SIGCONT)
        wait_for(lambda: "fenced off" in first.output(), 120, "host a to notice it was fenced off", first)
        # Host a has the whole time host b needs to finish for any late write.
        wait_for(lambda: service.get_job(job_id).state.finished, 400, "host b to finish", second)
    finally:
        _signal_group(first, signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2, job.error
    assert job.progress["percent"] == 100.0 and job.progress["epoch"] == EPOCHS - 1

    # Every recorded value is host b's: its last checkpoint carries the metrics of every epoch it recorded
    # (those of host a before the pause included, restored from the checkpoint it resumed from).
    run_b = env.root / "b" / "artifacts" / Path(job.artifacts["run_dir"]).name
    epochs = _epoch_metrics(run_b / "checkpoints" / "last.ckpt")
    [experiment] = service.list_experiments(stage="train")
    rows = [m for m in service.experiment_metrics(experiment.id) if m.epoch is not None and m.step is None]
    assert {m.epoch for m in rows} == set(range(EPOCHS))
    wrong = [(m.epoch, m.name, m.value) for m in rows if epochs[m.epoch].get(m.name) != pytest.approx(m.value)]
    assert not wrong, f"rows not written by host b: {wrong}"

    # Every object of the run in the bucket is host b's copy (host a's mirror differs: it trained on alone).
    store = bucket()
    objects = _bucket_objects(job_id)
    assert any(url.endswith("/last.ckpt") for url in objects)
    local_b = {"artifacts": env.root / "b" / "artifacts", "logs": env.root / "b" / "logs"}
    for url, data in objects.items():
        relative = url.removeprefix(store.url + "/")
        area, _, rest = relative.partition("/")
        copy = local_b[area] / rest
        assert copy.is_file() and _md5(copy.read_bytes()) == _md5(data), f"{url} is not host b's"

    # The final checkpoint and best_val_loss are the new owner's and the best over all epochs; no superseded
    # best file is left in the bucket.
    _assert_true_best(experiment, rows, objects)

    # The run's accounting spans both attempts: time accumulates over the takeover, and the per-image hits of
    # the best epoch are there for the report's paired intervals whichever attempt validated it.
    times = [m.value for m in sorted(rows, key=lambda m: m.epoch) if m.name == "train_time_s"]
    assert times == sorted(times), times
    assert experiment.metrics["train_time_s"] >= times[-1]
    assert experiment.artifacts.get("val_hits", "").startswith("s3://")

    # The job's log (the bucket's, written by host b) names the attempt that was fenced off.
    log = service.read_logs(job_id)
    assert "attempt 1 (" in log and "is fenced off" in log


def test_a_takeover_on_another_host_after_a_kill_keeps_the_best_checkpoint(hosts: JobEnv) -> None:
    """The best epoch is before the kill and no later epoch beats it: a learning rate too small to move the
    weights makes every epoch's val_loss the first one's, and a checkpoint is superseded only by a lower one."""
    env = hosts
    first = _worker(env, "a")
    second = None
    try:
        job_id = _submit(**{"train.epochs": "6", "train.lr": "1e-12"})
        wait_for(lambda: _epoch(job_id) >= 2, 300, "two epochs on host a", first)
        first.kill()
        second = _worker(env, "b", JOBS_STALE_AFTER_S=TAKEOVER_STALE_S)
        wait_for(lambda: service.get_job(job_id).state.finished, 400, "host b to take over and finish", second)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2, job.error
    [experiment] = service.list_experiments(stage="train")
    rows = [m for m in service.experiment_metrics(experiment.id) if m.epoch is not None and m.step is None]
    assert {m.epoch for m in rows} == set(range(6))
    assert len({m.value for m in rows if m.name == "val_loss"}) == 1  # the premise: no epoch beat the first
    _assert_true_best(experiment, rows, _bucket_objects(job_id))
    # Host b downloaded what it resumed from (last.ckpt and the best it names), no other checkpoint.
    run_b = env.root / "b" / "artifacts" / Path(job.artifacts["run_dir"]).name
    assert sorted(p.name for p in (run_b / "checkpoints").glob("*.ckpt")) == ["best-epoch=00.ckpt", "last.ckpt"]
    # The accounting spans both attempts: the best epoch was validated by host a, yet its per-image hits (the
    # report's paired intervals) are there; time accumulates over the takeover.
    hits = local_copy(experiment.artifacts["val_hits"]).read_text().splitlines()
    assert hits and all("i2t_hit@1" in json.loads(line) for line in hits)
    times = [m.value for m in sorted(rows, key=lambda m: m.epoch) if m.name == "train_time_s"]
    assert times == sorted(times) and experiment.metrics["train_time_s"] >= times[-1], times


def test_a_bucket_away_through_the_final_publish_for_longer_than_a_minute_does_not_fail_the_run(
    hosts: JobEnv, s3: S3Server
) -> None:
    """The bucket goes away (connections refused) once training is over, as the run publishes its files, for
    longer than the 60 s an upload used to be retried before the job failed: the run waits and succeeds."""
    env = hosts
    proxy = OutageProxy(s3.endpoint)
    worker = _worker(env, "a", JOBS_S3_ENDPOINT_URL=proxy.endpoint)
    try:
        job_id = _submit(**{"train.epochs": "2", "train.limit_train_batches": "2"})
        wait_for(lambda: "`Trainer.fit` stopped" in worker.output(), 300, "the end of training", worker)
        with proxy.away():
            time.sleep(AWAY_S)
            assert not service.get_job(job_id).state.finished, service.get_job(job_id).error  # still publishing
        wait_for(lambda: service.get_job(job_id).state.finished, 400, "the run to finish", worker)
    finally:
        worker.stop()
        proxy.down()
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 1, job.error
    assert "trying again" in worker.output()  # the publish did meet the outage
    [experiment] = service.list_experiments(stage="train")
    assert {m.epoch for m in service.experiment_metrics(experiment.id) if m.name == "val_loss"} == {0, 1}
    assert experiment.checkpoint_path.startswith("s3://") and bucket().fs().exists(experiment.checkpoint_path)


def _curve(job_id: int) -> list[tuple]:
    return sorted((m.split, m.epoch, m.step, m.name, m.value) for m in service.job_metrics(job_id))


def test_a_publish_that_outlasts_its_patience_is_retried_alone_without_training_again(
    hosts: JobEnv, s3: S3Server
) -> None:
    """The bucket goes away once the first epoch of a run that stops early is recorded, and stays away past the
    final publish's patience: the job ends FAILED as publish-pending, its numbers recorded and its files kept on
    its host. `jobs publish` picked up by a host without those files says so in one line; on the run's host,
    with the bucket back, it uploads them and the job SUCCEEDS with the same best checkpoint, no epoch trained
    again (a run stopped early would train one more epoch if it were resumed: Lightning does not restore the
    stop flag)."""
    env = hosts
    proxy = OutageProxy(s3.endpoint)
    host_a = {"JOBS_S3_ENDPOINT_URL": proxy.endpoint, "JOBS_PUBLISH_PATIENCE_S": PUBLISH_PATIENCE_S}
    worker = _worker(env, "a", **host_a)
    again = None
    try:
        # A learning rate too small to move the weights: every val_loss is epoch 0's, so early stopping with
        # patience 1 ends the run after epoch 1 of 4, and epoch 0 stays the best.
        overrides = {"train.lr": "1e-12", "train.early_stopping_patience": "1"}
        job_id = _submit(**{"train.epochs": "4", "train.limit_train_batches": "2", **overrides})
        wait_for(lambda: _curve(job_id), 300, "epoch 0 recorded", worker)
        proxy.down()  # epoch 1's upload may meet the outage too: that epoch then waits, and is kept all the same
        wait_for(lambda: service.get_job(job_id).state.finished, 300, "the publish to give up", worker)
        worker.stop()

        job = service.get_job(job_id)
        assert job.state is JobState.FAILED and job.error.startswith("publish pending: "), job.error
        assert "\n" not in job.error and f"`jobs publish {job_id}`" in job.error, job.error
        [experiment] = service.list_experiments(stage="train")
        assert experiment.status == "unpublished" and experiment.checkpoint_path is None, experiment
        curve = _curve(job_id)
        val_losses = {epoch: value for _, epoch, _, name, value in curve if name == "val_loss"}
        assert set(val_losses) == {0, 1} and experiment.metrics["epochs_run"] == 2  # stopped early, epochs kept
        best_val_loss = experiment.metrics["best_val_loss"]
        assert best_val_loss == pytest.approx(val_losses[0])
        host, _, run_a = experiment.artifacts["unpublished_on"].partition(":")
        assert host == socket.gethostname() and Path(run_a).is_relative_to(env.root / "a")
        assert [p.name for p in Path(run_a).rglob("*.ckpt")], f"the finished run's checkpoints left {run_a}"

        # This process is a host without the run: the retry it picks up says so in one line and changes nothing.
        service.publish(job_id)
        assert service.get_job(job_id).state is JobState.QUEUED
        execute_job(job_id, WorkerIdentity.current())
        job = service.get_job(job_id)
        assert job.state is JobState.FAILED and job.error.startswith("publish pending: this host"), job.error
        assert "\n" not in job.error and run_a in job.error, job.error
        assert service.list_experiments(stage="train")[0].status == "unpublished"

        # The run's host, the bucket back: the first retry's message is still queued, and runs the publish alone.
        proxy.up()
        service.publish(job_id)
        again = _worker(env, "a", **host_a)
        wait_for(lambda: service.get_job(job_id).state.finished, 300, "the publish-only retry", again)
    finally:
        worker.stop()
        if again is not None:
            again.stop()
        proxy.down()
    job = service.get_job(job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 3, job.error
    assert "the stage is not run again" in again.output()
    [experiment] = service.list_experiments(stage="train")
    assert experiment.status == "succeeded" and experiment.metrics["best_val_loss"] == best_val_loss
    assert _curve(job_id) == curve  # no epoch trained again, no row rewritten
    objects = _bucket_objects(job_id)
    rows = [m for m in service.experiment_metrics(experiment.id) if m.epoch is not None and m.step is None]
    _assert_true_best(experiment, rows, objects)
    assert experiment.checkpoint_path.startswith("s3://") and experiment.checkpoint_path in objects
    last = next(url for url in objects if url.endswith("/last.ckpt"))
    assert _checkpoint_state(local_copy(last))["epoch"] == 1  # the bucket's last.ckpt is the run's, not a new one
