"""Artifacts in an S3-compatible bucket (jobs/core/storage.py), against moto's real server on 127.0.0.1.

A "host" is a worker with artifacts and logs folders of its own; they share the database, the broker and the
bucket, nothing on disk. The test process itself is a third host (the job environment's own folders).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import (
    REAL_STAGE_TIMINGS,
    TAKEOVER_TIMINGS,
    JobEnv,
    Worker,
    embedded_variables,
    override,
    run_cli,
    wait_for,
)
from storage_fixtures import CREDENTIALS, S3Server

from api.app import create_app
from api.deps import ApiSettings
from jobs import service
from jobs.core.database import dispose_engines
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.settings import reset_settings
from jobs.core.stages import Stage, StageParams
from jobs.core.storage import Bucket, StorageError, bucket, local_copy
from worker.checkpoint_info import SIGLIP_CHECKPOINT_KEY, read_header

pytestmark = pytest.mark.slow


@pytest.fixture
def bucket_env(job_env: JobEnv, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> JobEnv:
    override(job_env, monkeypatch, s3.variables(s3.new_bucket()))
    return job_env


def host(env: JobEnv, name: str) -> dict[str, str]:
    return {"JOBS_ARTIFACTS_DIR": str(env.root / name / "artifacts"), "JOBS_LOG_DIR": str(env.root / name / "logs")}


def test_a_folder_uploaded_on_one_host_is_downloaded_on_another_once(s3: S3Server, tmp_path: Path, monkeypatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3.new_bucket()}/medvl"
    here, there = (Bucket(url, tmp_path / h / "artifacts", tmp_path / h / "logs", s3.endpoint) for h in "ab")
    run = here.artifacts / "job-1-20260101T000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))
    (run / "metrics.csv").write_text("epoch,loss\n0,1.0\n")

    assert here.push(run) == 2 and here.push(run) == 0  # unchanged files are not sent again
    name = here.url_of(run)
    assert name == f"{url}/artifacts/job-1-20260101T000000"
    copy = there.fetch(name)
    assert copy == there.artifacts / "job-1-20260101T000000"
    assert (copy / "checkpoints" / "last.ckpt").read_bytes() == (run / "checkpoints" / "last.ckpt").read_bytes()
    stamp = (copy / "metrics.csv").stat().st_mtime_ns
    there.fetch(name)
    assert (copy / "metrics.csv").stat().st_mtime_ns == stamp  # same ETag: not downloaded again

    (run / "metrics.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n")
    here.fetch(name)  # a file this host is still writing is never replaced by the bucket's older copy
    assert (run / "metrics.csv").read_text().endswith("1,0.5\n")
    assert here.push(run) == 1
    assert (there.fetch(name) / "metrics.csv").read_text().endswith("1,0.5\n")
    with pytest.raises(StorageError, match="not under JOBS_ARTIFACTS_URL"):
        there.local_of(f"{url}/artifacts/../../elsewhere")


def test_a_prepared_dataset_is_decoded_on_one_host_and_copied_from_the_bucket_by_another(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts with var folders of their own: the first decodes the images and puts the caches in the
    bucket's prepared/ area; the second, its data folder empty, copies them and decodes nothing."""
    import numpy as np

    from jobs.execution.artifacts import PreparedInBucket, stage_inputs
    from worker.config import load_config
    from worker.data import cache as cache_module
    from worker.data import load_prepared, shared

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MEDVL_VAR_DIR", raising=False)
    url = f"s3://{s3.new_bucket()}/medvl"
    stores = {h: PreparedInBucket(Bucket(url, tmp_path / h / "artifacts", tmp_path / h / "logs", s3.endpoint))
              for h in "ab"}  # fmt: skip
    settings = {"model.build_tiny_fixtures": False, "data.synthetic_studies": 40, "data.cache_workers": 1}
    configs = {h: load_config("smoke", {**settings, "paths.var_dir": str(tmp_path / h / "var")}) for h in "ab"}

    with shared.sharing(stores["a"]):
        first = load_prepared(configs["a"])
    fs = stores["a"].store.fs()
    uploaded = sorted(key.rsplit("/", 1)[1] for key in fs.find(f"{url.removeprefix('s3://')}/prepared"))
    assert len(uploaded) == 6 and {Path(name).suffix for name in uploaded} == {".npy", ".json"}  # 3 splits

    decoded: list[str] = []
    real_decode = cache_module.decode_image
    monkeypatch.setattr(cache_module, "decode_image", lambda *args: decoded.append(args[0]) or real_decode(*args))
    with shared.sharing(stores["b"]):
        second = load_prepared(configs["b"])
    assert decoded == []  # host b decoded no image
    assert second.counts == first.counts
    for name, split in second.splits.items():
        mine, theirs = Path(second.artifacts[f"cache_{name}"]), Path(first.artifacts[f"cache_{name}"])
        assert mine.is_relative_to(tmp_path / "b") and theirs.is_relative_to(tmp_path / "a")
        assert split.filenames == first.split(name).filenames and isinstance(split.images, np.memmap)
        np.testing.assert_array_equal(np.asarray(split.images), np.asarray(first.split(name).images))
    assert not [p for p in (tmp_path / "b").rglob("*") if "partial" in p.name or "download" in p.name]

    # The job runner installs the bucket as the shared store for the length of every stage.
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", url)
    monkeypatch.setenv("JOBS_S3_ENDPOINT_URL", s3.endpoint)
    reset_settings()
    try:
        with stage_inputs():
            assert isinstance(shared.current(), PreparedInBucket) and shared.current().url("k") == f"{url}/prepared/k"
        assert shared.current() is None
    finally:
        reset_settings()


def test_a_resumed_run_downloads_what_it_resumes_from_and_superseded_checkpoints_leave_the_bucket(
    job_env: JobEnv, s3: S3Server, monkeypatch
) -> None:
    import torch

    from jobs.execution.artifacts import local_run_dir

    override(job_env, monkeypatch, {**s3.variables(s3.new_bucket()), **host(job_env, "a")})
    here = bucket()
    run = here.artifacts / "job-1-20260101T000000"
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    best = checkpoints / "best-epoch=03.ckpt"
    state = {"best_model_path": str(best), "best_k_models": {str(best): torch.tensor(0.5)}, "dirpath": str(checkpoints)}
    torch.save({"epoch": 4, "callbacks": {"BestCheckpoint{'monitor': 'val_loss'}": state}}, checkpoints / "last.ckpt")
    for name in ("best-epoch=01.ckpt", "best-epoch=03.ckpt"):
        (checkpoints / name).write_bytes(os.urandom(1024))
    (run / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    here.push(run)

    # Host a supersedes epoch 1's best: the next upload removes it from the bucket too, and nothing else.
    (checkpoints / "best-epoch=01.ckpt").unlink()
    assert here.prune(run, ".ckpt") == [f"{here.url_of(checkpoints)}/best-epoch=01.ckpt"]
    (checkpoints / "best-epoch=01.ckpt").write_bytes(os.urandom(1024))  # a stale copy the bucket has again
    here.push(run)

    # Host b resumes: last.ckpt, the best it names and the small files; not the superseded checkpoint.
    override(job_env, monkeypatch, host(job_env, "b"))
    copy = local_run_dir(here.url_of(run), resume=True)
    assert copy == bucket().artifacts / run.name
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "checkpoints/best-epoch=03.ckpt", "checkpoints/last.ckpt", "metrics.csv"
    ]


def test_a_bucket_that_cannot_be_used_refuses_the_submission_naming_the_setting(job_env, s3, monkeypatch) -> None:
    override(job_env, monkeypatch, s3.variables("no-such-bucket"))
    with pytest.raises(StorageError, match=r"JOBS_ARTIFACTS_URL=s3://no-such-bucket/medvl .*does not exist"):
        service.submit(SubmitRequest(stage=Stage.train))
    completed = run_cli(job_env, "submit", "train")
    assert completed.returncode != 0 and "bucket 'no-such-bucket' does not exist" in completed.stderr
    assert "Traceback" not in completed.stderr

    override(job_env, monkeypatch, {**s3.variables(s3.new_bucket()), "JOBS_S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    unreachable = re.escape("JOBS_S3_ENDPOINT_URL=http://127.0.0.1:9: the storage server did not answer")
    with pytest.raises(StorageError, match=unreachable):
        service.submit(SubmitRequest(stage=Stage.train))
    assert service.list_jobs() == []  # refused before any row was written


def test_jobs_bucket_creates_and_checks_the_bucket(job_env, s3, monkeypatch) -> None:
    override(job_env, monkeypatch, s3.variables(f"made-{uuid.uuid4().hex[:8]}"))
    missing = run_cli(job_env, "bucket")
    assert missing.returncode == 1 and "does not exist" in missing.stderr, missing.stderr
    made = run_cli(job_env, "bucket", "--create")
    assert made.returncode == 0 and "the bucket answers" in made.stdout, made.stderr
    assert service.submit(SubmitRequest(stage=Stage.train)).state is JobState.QUEUED


def test_a_checkpoint_outside_the_configured_bucket_is_refused(bucket_env) -> None:
    request = SubmitRequest(stage=Stage.evaluate, params=StageParams(checkpoint="s3://elsewhere/job-1/best.ckpt"))
    with pytest.raises(service.InvalidRequest, match="outside JOBS_ARTIFACTS_URL") as refused:
        service.submit(request)
    assert refused.value.field == "params.checkpoint"


def _last_recorded_epoch() -> int:
    [experiment] = service.list_experiments(stage="train")
    return max(m.epoch for m in service.experiment_metrics(experiment.id) if m.split == "val" and m.epoch is not None)


def test_a_job_killed_on_one_host_resumes_on_another_from_the_bucket(bucket_env) -> None:
    env = bucket_env
    job = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.epochs": "12"}))
    first = Worker(env, extra_env={"FAKE_EPOCH_S": "0.3", **host(env, "a")}, name="a")
    second = None
    try:
        wait_for(lambda: (service.get_job(job.id).progress or {}).get("epoch", 0) >= 3, 120, "three epochs", first)
        first.kill()
        recorded = _last_recorded_epoch()
        second = Worker(env, extra_env={"FAKE_EPOCH_S": "0.05", **host(env, "b"), **TAKEOVER_TIMINGS}, name="b")
        wait_for(lambda: service.get_job(job.id).state.finished, 120, "the takeover to finish", second)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    done = service.get_job(job.id)
    assert done.state is JobState.SUCCEEDED and done.attempts == 2, done.error
    assert done.artifacts["run_dir"].startswith("s3://") and done.artifacts["best_checkpoint"].startswith("s3://")
    assert len(service.list_experiments(stage="train")) == 1
    # Host b never saw host a's disk: it began where the bucket's checkpoint left off. The fake stage records an
    # epoch before it writes that epoch's checkpoint (the train stage the other way round), so the upload made
    # before the last recorded epoch R holds R - 1 at least: b starts at R, or R + 1 after a later upload.
    run_b = env.root / "b" / "artifacts" / Path(done.artifacts["run_dir"]).name
    starts = [int(line) for line in (run_b / "starts.txt").read_text().split()]
    assert starts[0] == 0 and recorded <= starts[1] <= recorded + 1, (starts, recorded)
    # This process is a third host: the log comes from the bucket, both attempts in it.
    log = service.read_logs(job.id)
    assert "fake stage starting at epoch 0" in log and f"fake stage starting at epoch {starts[1]} of 12" in log


def test_a_comparison_with_generation_over_two_hosts_is_read_through_the_api_on_a_third(
    smoke_prepared, smoke_config, s3, tmp_path, monkeypatch
) -> None:
    variables = {
        **embedded_variables(tmp_path),
        **host(JobEnv(tmp_path, {}), "api"),
        "MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir)),  # data and tiny models: on every host
        **REAL_STAGE_TIMINGS,
        **s3.variables(s3.new_bucket()),
    }
    env = JobEnv(tmp_path, variables)
    for name, value in env.variables.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    dispose_engines()
    workers = [Worker(env, fake=False, extra_env=host(env, name), name=name) for name in ("a", "b")]
    try:
        for worker in workers:
            worker.wait_ready()
        completed = run_cli(
            env, "submit", "compare", "--preset", "smoke", "--epochs", "1", "--with-generation",
            "--set", "train.limit_train_batches=2", "--set", "generation.epochs=2", "--set", "generation.num_beams=1",
            "--wait", "--json", timeout=600,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr + "".join(w.output()[-3000:] for w in workers)
    finally:
        for worker in workers:
            worker.stop()
    parent = json.loads(completed.stdout)
    assert parent["state"] == "SUCCEEDED"
    children = service.get_job(parent["id"]).children
    assert {"train", "train-full", "evaluate", "report"} <= {c.stage for c in children}
    # Both hosts ran children: a host's mirror holds only what it ran or what its jobs read.
    for name in ("a", "b"):
        assert list((env.root / name / "artifacts").glob("job-*")), f"host {name} ran nothing"
    # The generator names its SigLIP checkpoint by URL, so an evaluate on the other host loads the same file.
    train_full = next(c for c in children if c.stage == "train-full")
    header = read_header(local_copy(train_full.artifacts["best_checkpoint"]))
    assert header[SIGLIP_CHECKPOINT_KEY].startswith(f"{os.environ['JOBS_ARTIFACTS_URL']}/artifacts/job-")
    report_job = next(c for c in children if c.stage == "report")
    assert report_job.artifacts["json"].startswith("s3://")

    client = TestClient(create_app(ApiSettings("token", False)))
    answer = client.get(f"/reports/{report_job.id}", headers={"Authorization": "Bearer token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["compare_job_id"] == parent["id"]
    copy = bucket().local_of(report_job.artifacts["json"])
    assert copy.is_file() and copy.is_relative_to(env.root / "api")  # downloaded into this host's mirror
    page = client.get(f"/reports/{report_job.id}", headers={"Authorization": "Bearer token", "Accept": "text/html"})
    assert page.status_code == 200 and "<html" in page.text.lower()
    dispose_engines()
    reset_settings()
