"""Submit through HTTP, a real worker runs the job: on the embedded default and on Redis + PostgreSQL.

The worker is `jobs worker` with the job-system tests' fake stage (tests/jobs_fixtures.py): it records
metrics and progress like a training stage, in a second or two, so these tests exercise the queue,
the worker and the database, not the ML.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import (
    BACKENDS,
    JobEnv,
    Worker,
    both_backends,
    wait_for,
)

from api.app import create_app
from api.deps import ApiSettings

TOKEN = "e2e-token"


@pytest.fixture(params=BACKENDS, ids=["sqlite", "redis-postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    yield from both_backends(request.param, tmp_path, monkeypatch)


@pytest.fixture
def client(backend: JobEnv) -> Iterator[TestClient]:
    app = create_app(ApiSettings(TOKEN, False))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client


@pytest.mark.slow
def test_a_job_submitted_over_http_is_run_by_a_worker_and_recorded(backend: JobEnv, client: TestClient) -> None:
    worker = Worker(backend)
    try:
        response = client.post("/jobs", json={"stage": "train", "preset": "smoke", "peft": "qlora", "epochs": 3})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        def finished() -> dict | None:
            job = client.get(f"/jobs/{job_id}").json()
            return job if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

        job = wait_for(finished, timeout=90, what=f"job {job_id} to finish", worker=worker)
    finally:
        worker.stop()

    assert job["state"] == "SUCCEEDED", job["error"]
    assert job["attempts"] == 1
    assert job["progress"]["percent"] == pytest.approx(100)
    (experiment_id,) = job["experiment_ids"]
    experiments = client.get("/experiments", params={"stage": "train", "peft": "qlora"}).json()
    assert [e["id"] for e in experiments] == [experiment_id]
    assert experiments[0]["metrics"]["samples_per_s"] == 123.5
    metrics = client.get(f"/experiments/{experiment_id}/metrics").json()
    val_losses = [(m["epoch"], m["value"]) for m in metrics if m["name"] == "val_loss"]
    assert val_losses == [(0, 2.0), (1, 1.0), (2, pytest.approx(2.0 / 3))]
    assert "epoch 2 done" in client.get(f"/jobs/{job_id}/logs").text
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "broker": "ok"}
