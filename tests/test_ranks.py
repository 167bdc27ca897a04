"""`jobs run --devices 2`: Lightning's DDP launcher re-runs the command line for rank 1; that rank must join
the same job as a follower, not create and record a second one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import JobEnv, run_cli

from jobs import service
from jobs.core.schemas import JobState

pytestmark = pytest.mark.slow


def test_two_cpu_ranks_make_one_job_and_one_experiment(job_env: JobEnv, smoke_prepared, smoke_config):
    env = JobEnv(job_env.root, {**job_env.variables, "MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir))})
    completed = run_cli(
        env, "run", "train", "--preset", "smoke", "--devices", "2", "--epochs", "1",
        "--set", "train.limit_train_batches=2", "--json", timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    [line] = completed.stdout.strip().splitlines()  # one result: rank 1 printed nothing
    result = json.loads(line)
    assert result["state"] == "SUCCEEDED" and result["metrics"]["epochs_run"] == 1
    jobs = service.list_jobs()
    assert [(job.id, job.state) for job in jobs] == [(result["job_id"], JobState.SUCCEEDED)]
    assert len(service.list_experiments()) == 1
