"""A comparison with report generation over two seeds, through a real worker: every seed and method is scored
on the same test studies (the split has a seed of its own). A module of its own so that pytest-xdist can run it
beside test_compare's other slow comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import Worker, run_cli, smoke_worker_env

from jobs import service
from jobs.core.database import dispose_engines
from jobs.core.settings import reset_settings


@pytest.mark.slow
def test_compare_with_generation_scores_every_seed_on_the_same_test_studies(
    smoke_prepared, smoke_config, tmp_path, monkeypatch
):
    env = smoke_worker_env(smoke_config, tmp_path, monkeypatch)
    worker = Worker(env, fake=False, name="compare-generation")
    try:
        worker.wait_ready()
        completed = run_cli(
            env, "submit", "compare", "--preset", "smoke", "--epochs", "1", "--seeds", "2", "--with-generation",
            "--set", "train.limit_train_batches=2", "--set", "generation.epochs=1", "--wait", "--json", timeout=1500,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr + worker.output()[-4000:]
    finally:
        worker.stop()
    parent = json.loads(completed.stdout)
    assert parent["state"] == "SUCCEEDED", parent
    evaluations = service.list_experiments(stage="evaluate")
    assert len(evaluations) == 4  # two methods x two seeds
    studies = [
        [json.loads(line)["uid"] for line in Path(e.artifacts["predictions"]).read_text().splitlines()]
        for e in evaluations
    ]
    assert studies[0] and all(listed == studies[0] for listed in studies)
    assert all(e.metrics["train_overlap"] == 0 and e.metrics["split_seed"] == 42 for e in evaluations)
    page = Path(parent["artifacts"]["markdown"]).read_text()
    assert "same data split (split seed 42, 70/10/20 train/val/test by study)" in page
    dispose_engines()
    reset_settings()
