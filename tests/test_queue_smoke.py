"""End to end on the embedded default: `jobs worker` and `jobs submit train --preset smoke --peft qlora --wait`,
with the real SigLIP stage, nothing configured but the var folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import CONFIGURED, REAL_STAGE_TIMINGS, JobEnv, Worker, run_cli
from sqlalchemy import func, select

from db.models import Metric
from jobs import service
from jobs.broker import localbroker
from jobs.core.database import dispose_engines, transaction
from jobs.core.schemas import JobState
from jobs.core.settings import get_settings, reset_settings

pytestmark = pytest.mark.slow

def test_submit_qlora_training_and_wait_for_a_jobs_worker(smoke_prepared, smoke_config, tmp_path, monkeypatch):
    for name in CONFIGURED:
        monkeypatch.delenv(name, raising=False)
    # The session's smoke folder (data and tiny models already built) is the var folder: the database and the
    # broker are the defaults under it, as on a fresh clone.
    var_dir = str(Path(smoke_config.paths.var_dir))
    env = JobEnv(tmp_path, {"MEDVL_VAR_DIR": var_dir, **REAL_STAGE_TIMINGS})
    for name, value in env.variables.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    dispose_engines()
    local = localbroker.configured()
    assert local is not None and local.directory == Path(var_dir) / "broker"
    assert get_settings().broker == get_settings().result_backend == local.url

    worker = Worker(env, fake=False, name="smoke")
    try:
        worker.wait_ready()
        completed = run_cli(
            env, "submit", "train", "--preset", "smoke", "--peft", "qlora", "--epochs", "2",
            "--set", "train.limit_train_batches=2", "--wait", "--json", timeout=400,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr + worker.output()[-4000:]
    finally:
        worker.stop()
        run_cli(env, "broker", "stop", timeout=30)
    job = json.loads(completed.stdout)
    assert job["state"] == "SUCCEEDED" and job["attempts"] == 1

    view = service.get_job(job["id"])
    assert view.state is JobState.SUCCEEDED and view.progress["percent"] == 100.0
    [experiment] = service.list_experiments(stage="train", peft="qlora")
    assert experiment.job_id == job["id"] and experiment.status == "succeeded"
    assert experiment.metrics["epochs_run"] == 2 and experiment.metrics["trainable_params"] > 0
    assert Path(experiment.checkpoint_path).is_file()
    with transaction() as session:
        losses = session.scalar(
            select(func.count())
            .select_from(Metric)
            .where(Metric.experiment_id == experiment.id, Metric.name == "train_loss")
        )
    assert losses == 2
    log_text = service.read_logs(job["id"])
    assert "claimed by" in log_text and "max_epochs=2" in log_text  # Lightning's own output is in the job's log
    dispose_engines()
    reset_settings()
