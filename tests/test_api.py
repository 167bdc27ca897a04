"""The HTTP API against the real job service: SQLite database and the local Redis broker in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import embedded_variables
from pydantic import ValidationError

from api.app import create_app
from api.deps import ApiSettings, AuthNotConfigured
from api.models import JobSubmission
from db.models import Experiment, Metric
from jobs.core.database import dispose_engines, transaction
from jobs.core.settings import get_settings, reset_settings
from jobs.core.views import job_log_path

TOKEN = "test-token-0123456789"


@pytest.fixture
def service_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the job service at a fresh database and broker under tmp_path; returns the var root."""
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("MEDVL_VAR_DIR", str(var))
    for name, value in embedded_variables(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ("JOBS_ARTIFACTS_DIR", "JOBS_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield var
    dispose_engines()
    reset_settings()


def api_settings(var: Path, token: str | None = TOKEN, auth_disabled: bool = False) -> ApiSettings:
    return ApiSettings(api_token=token, auth_disabled=auth_disabled)


@pytest.fixture
def client(service_env: Path) -> Iterator[TestClient]:
    """An authenticated client of an app on the real service."""
    with TestClient(create_app(api_settings(service_env))) as test_client:
        test_client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield test_client


def _submit(client: TestClient, **body: object) -> dict:
    response = client.post("/jobs", json={"stage": "train", "preset": "smoke", **body})
    assert response.status_code == 202, response.text
    return response.json()


def _error_locations(response) -> list[list]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


# --- submit and read back ------------------------------------------------------------------------------------


def test_submit_records_a_queued_job_with_the_requested_config(client: TestClient) -> None:
    job = _submit(client, peft="qlora", epochs=2, batch_size=8, overrides={"peft.r": "4"})

    assert job["state"] == "QUEUED"
    assert job["stage"] == "train"
    assert job["celery_task_id"]
    assert job["config"]["peft"]["method"] == "qlora"
    assert job["config"]["peft"]["r"] == 4
    assert job["config"]["train"]["epochs"] == 2
    assert job["config"]["train"]["batch_size"] == 8
    assert client.get(f"/jobs/{job['id']}").json()["config"] == job["config"]
    listed = client.get("/jobs", params={"state": "QUEUED"}).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/jobs", params={"state": "RUNNING"}).json() == []


def test_overrides_take_json_numbers_and_booleans_as_the_cli_takes_their_text(client: TestClient) -> None:
    overrides = {"train.lr": 0.001, "peft.r": 4, "train.resume": True, "data.projection": "Lateral"}
    job = _submit(client, overrides=overrides)

    assert job["config"]["train"]["lr"] == 0.001
    assert job["config"]["peft"]["r"] == 4
    assert job["config"]["train"]["resume"] is True
    assert job["config"]["data"]["projection"] == "Lateral"
    as_text = JobSubmission(stage="train", overrides={"train.lr": 1e-4, "peft.r": 4, "train.resume": False})
    assert as_text.config_overrides() == {"train.lr": "0.0001", "peft.r": "4", "train.resume": "false"}
    with pytest.raises(ValidationError, match="finite"):
        JobSubmission(stage="train", overrides={"train.lr": float("inf")})


def test_same_request_with_the_same_idempotency_key_returns_the_first_job(client: TestClient) -> None:
    first = _submit(client, idempotency_key="nightly-2026-11-27", epochs=5)
    again = _submit(client, idempotency_key="nightly-2026-11-27", epochs=5)

    assert again["id"] == first["id"]
    assert len(client.get("/jobs").json()) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"epochs": 6},
        {"stage": "prepare-data"},
        {"overrides": {"peft.r": "4"}},
        {"gpu_class": "a100"},
        {"stage": "compare"},
    ],
)
def test_an_idempotency_key_reused_for_another_request_is_409_naming_the_first_job(
    client: TestClient, other: dict
) -> None:
    first = _submit(client, idempotency_key="nightly", epochs=5)

    body = {"stage": "train", "preset": "smoke", "epochs": 5, "idempotency_key": "nightly", **other}
    response = client.post("/jobs", json=body)

    assert response.status_code == 409, response.text
    assert response.json()["job_id"] == first["id"]
    assert f"job {first['id']}" in response.json()["detail"] and "new key" in response.json()["detail"]
    assert len(client.get("/jobs").json()) == 1


def test_resume_while_the_earlier_job_is_queued_is_422_naming_it(client: TestClient) -> None:
    earlier = _submit(client, epochs=3)
    response = client.post("/jobs", json={"stage": "train", "preset": "smoke", "epochs": 3, "resume": True})
    assert response.status_code == 422, response.text
    assert f"earlier job {earlier['id']} with this config is QUEUED" in response.json()["detail"][0]["msg"]


def test_resume_of_a_job_whose_publish_is_pending_is_422_naming_jobs_publish(client: TestClient) -> None:
    """Resuming would train again (one more epoch for a run stopped early); the publish alone finishes it."""
    from sqlalchemy import update

    from db.models import Job

    earlier = _submit(client, epochs=3)
    with transaction() as session:
        session.execute(update(Job).where(Job.id == earlier["id"]).values(state="FAILED", error="publish pending: ..."))
        session.add(Experiment(job_id=earlier["id"], stage="train", config_hash="abc", status="unpublished"))
    response = client.post("/jobs", json={"stage": "train", "preset": "smoke", "epochs": 3, "resume": True})
    assert response.status_code == 422, response.text
    assert f"`jobs publish {earlier['id']}`" in response.json()["detail"][0]["msg"]


def test_stage_params_reach_the_job(client: TestClient, service_env: Path) -> None:
    checkpoint = service_env / "artifacts" / "run-1" / "model.ckpt"
    job = _submit(client, stage="evaluate", params={"checkpoint": str(checkpoint), "split": "val"})

    assert job["params"] == {"checkpoint": str(checkpoint), "split": "val"}


def test_cancel_of_a_queued_job_ends_it_cancelled(client: TestClient) -> None:
    job = _submit(client)

    response = client.post(f"/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["state"] == "CANCELLED"
    assert client.get(f"/jobs/{job['id']}").json()["state"] == "CANCELLED"


def test_publish_queues_only_a_job_whose_finished_run_waits_for_its_files(client: TestClient) -> None:
    """A job that never finished training is refused (422, one line); a FAILED job whose experiment is
    unpublished (the bucket was away past the publish's patience) is queued again with a new message."""
    from sqlalchemy import update

    from db.models import Job

    job = _submit(client)
    refused = client.post(f"/jobs/{job['id']}/publish")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["msg"].startswith(f"job {job['id']} has no publish pending (it is QUEUED")

    with transaction() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(state="FAILED", error="publish pending: ..."))
        session.add(Experiment(job_id=job["id"], stage="train", config_hash="abc", status="unpublished"))
    response = client.post(f"/jobs/{job['id']}/publish")

    assert response.status_code == 200, response.text
    queued = response.json()
    assert queued["state"] == "QUEUED" and queued["error"] is None
    assert queued["celery_task_id"] and queued["celery_task_id"] != job["celery_task_id"]
    again = client.post(f"/jobs/{job['id']}/publish")  # queued already: not a second message
    assert again.status_code == 422 and "it is QUEUED" in again.text


def test_logs_are_served_as_text_with_an_optional_tail(client: TestClient) -> None:
    job = _submit(client)
    assert client.get(f"/jobs/{job['id']}/logs").text == ""
    log = job_log_path(job["id"])
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("epoch 1\nepoch 2\nepoch 3\n")

    full = client.get(f"/jobs/{job['id']}/logs")
    tail = client.get(f"/jobs/{job['id']}/logs", params={"tail": 2})

    assert full.headers["content-type"].startswith("text/plain")
    assert full.text == "epoch 1\nepoch 2\nepoch 3\n"
    assert tail.text == "epoch 2\nepoch 3\n"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs/999"),
        ("get", "/jobs/999/logs"),
        ("post", "/jobs/999/cancel"),
        ("post", "/jobs/999/publish"),
        ("get", "/experiments/999/metrics"),
    ],
)
def test_unknown_ids_are_404_with_a_hint(client: TestClient, method: str, path: str) -> None:
    response = getattr(client, method)(path)

    assert response.status_code == 404
    assert "999" in response.json()["detail"]


# --- experiments ------------------------------------------------------------------------------------------------


def _insert_experiment(stage: str, peft: str, values: list[float]) -> int:
    with transaction() as session:
        experiment = Experiment(stage=stage, peft_method=peft, config_hash="abc", status="succeeded", seed=1)
        session.add(experiment)
        session.flush()
        for epoch, value in enumerate(values):
            session.add(Metric(experiment_id=experiment.id, split="val", epoch=epoch, step=0, name="loss", value=value))
        return experiment.id


def test_experiments_filter_by_stage_and_peft_and_serve_their_metrics(client: TestClient) -> None:
    lora = _insert_experiment("train", "lora", [0.9, 0.5])
    qlora = _insert_experiment("train", "qlora", [0.8])
    _insert_experiment("evaluate", "lora", [])

    assert [e["id"] for e in client.get("/experiments", params={"peft": "qlora"}).json()] == [qlora]
    assert [e["id"] for e in client.get("/experiments", params={"stage": "train"}).json()] == [qlora, lora]
    assert len(client.get("/experiments", params={"limit": 1}).json()) == 1
    metrics = client.get(f"/experiments/{lora}/metrics").json()
    assert [(m["split"], m["epoch"], m["name"], m["value"]) for m in metrics] == [
        ("val", 0, "loss", 0.9),
        ("val", 1, "loss", 0.5),
    ]


@pytest.mark.parametrize(
    ("params", "field"), [({"peft": "dora"}, "peft"), ({"stage": "bake"}, "stage"), ({"limit": 0}, "limit")]
)
def test_experiment_filters_are_validated(client: TestClient, params: dict, field: str) -> None:
    assert _error_locations(client.get("/experiments", params=params)) == [["query", field]]


# --- auth -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
def test_requests_without_the_right_token_are_401(service_env: Path, header: str | None) -> None:
    client = TestClient(create_app(api_settings(service_env)))
    headers = {"Authorization": header} if header is not None else {}

    for method, path in [("get", "/jobs"), ("post", "/jobs"), ("get", "/experiments"), ("get", "/jobs/1")]:
        response = client.request(method.upper(), path, headers=headers, json={"stage": "train"})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_auth_can_be_disabled_explicitly_for_local_use(service_env: Path) -> None:
    client = TestClient(create_app(api_settings(service_env, token=None, auth_disabled=True)))

    assert client.get("/jobs").status_code == 200


def test_the_api_refuses_to_start_without_a_token_or_an_explicit_opt_out(service_env: Path) -> None:
    with pytest.raises(AuthNotConfigured, match="API_TOKEN"):
        create_app(api_settings(service_env, token=None))


def test_healthz_needs_no_token_and_reports_database_and_broker(service_env: Path) -> None:
    response = TestClient(create_app(api_settings(service_env))).get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(service_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:9/0")  # the discard port: nothing answers
    reset_settings()

    response = TestClient(create_app(api_settings(service_env))).get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("degraded", "ok")
    assert body["broker"].startswith("error:")


# --- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"stage": "bake"}, ["body", "stage"]),
        ({"peft": "dora"}, ["body", "peft"]),
        ({"epochs": 0}, ["body", "epochs"]),
        ({"epochs": 100_000}, ["body", "epochs"]),
        ({"batch_size": 0}, ["body", "batch_size"]),
        ({"batch_size": 10**6}, ["body", "batch_size"]),
        ({"lr": -1}, ["body", "lr"]),
        ({"preset": "../../etc/passwd"}, ["body", "preset"]),
        ({"params": {"split": "everything"}}, ["body", "params", "split"]),
        ({"params": {"num_samples": 0}}, ["body", "params", "num_samples"]),
        ({"params": {"unknown": 1}}, ["body", "params", "unknown"]),
        ({"color": "blue"}, ["body", "color"]),
        ({"idempotency_key": ""}, ["body", "idempotency_key"]),
    ],
)
def test_bad_fields_are_422_naming_the_field(client: TestClient, body: dict, location: list) -> None:
    payload = {"stage": "train", **body}

    assert location in _error_locations(client.post("/jobs", json=payload))
    assert client.get("/jobs").json() == []


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"stage": "evaluate", "params": {"checkpoint": "/etc/passwd"}}, ["body", "params", "checkpoint"]),
        (
            {"stage": "predict", "params": {"checkpoint": "var/a.ckpt", "images": ["var/in", "/home/x.dcm"]}},
            ["body", "params", "images", 1],
        ),
        (
            {"stage": "train-full", "params": {"siglip_checkpoint": "var/../../x.ckpt"}},
            ["body", "params", "siglip_checkpoint"],
        ),
        ({"config": "/etc/medvl.yaml"}, ["body", "config"]),
        ({"config": "configs/../../secrets.yaml"}, ["body", "config"]),
        ({"data_dir": "~/datasets/iu-xray"}, ["body", "data_dir"]),
        ({"overrides": {"paths.run_dir": "/tmp/elsewhere"}}, ["body", "overrides", "paths.run_dir"]),
        ({"overrides": {"model.siglip": "/models/siglip"}}, ["body", "overrides", "model.siglip"]),
    ],
)
def test_paths_outside_the_data_and_artifact_roots_are_422(client: TestClient, body: dict, location: list) -> None:
    response = client.post("/jobs", json={"stage": "train", **body})

    assert location in _error_locations(response)
    assert "outside the allowed roots" in response.json()["detail"][0]["msg"]


def test_paths_under_the_roots_and_hub_ids_are_accepted(client: TestClient, service_env: Path) -> None:
    data = service_env / "data" / "iu-xray"
    job = _submit(
        client,
        stage="evaluate",
        data_dir=str(data),
        config="configs/smoke.yaml",
        params={"checkpoint": "var/artifacts/run-1/model.ckpt"},
        overrides={"model.siglip": "google/siglip-base-patch16-224", "paths.run_dir": str(service_env / "runs/a")},
    )

    assert job["config"]["data"]["data_dir"] == str(data)
    assert job["config"]["model"]["siglip"] == "google/siglip-base-patch16-224"


def test_a_predict_job_on_images_under_the_roots_is_queued(client: TestClient, service_env: Path) -> None:
    images = ["var/incoming", str(service_env / "scans" / "film.dcm")]
    job = _submit(client, stage="predict", params={"checkpoint": "var/artifacts/run-1/best.ckpt", "images": images})

    assert job["stage"] == "predict" and job["state"] == "QUEUED"
    # Stored as the absolute files that were checked, so the worker opens exactly those.
    checked = {
        "checkpoint": str(service_env / "artifacts/run-1/best.ckpt"),
        "images": [str(service_env / "incoming"), images[1]],
    }
    assert job["params"] == {**checked, "top_k": 5}


def test_a_relative_config_path_means_the_same_file_from_any_working_directory(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    job = _submit(client, config="configs/smoke.yaml", epochs=2)

    assert job["config"]["preset"] == "smoke"
    assert job["config"]["train"]["epochs"] == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"overrides": {"train.epochz": "3"}}, ["train.epochz", "epochs"]),
        ({"overrides": {"train.epochs": "-1"}}, ["train.epochs"]),
        ({"preset": "nonexistent"}, ["nonexistent", "smoke"]),
        ({"stage": "evaluate"}, ["--checkpoint"]),
    ],
)
def test_requests_the_service_refuses_are_422_with_its_message(client: TestClient, body: dict, words: list) -> None:
    response = client.post("/jobs", json={"stage": "train", **body})

    assert _error_locations(response) == [["body"]]
    message = response.json()["detail"][0]["msg"]
    assert all(word in message for word in words), message


# --- the request model ------------------------------------------------------------------------------------------


def test_shortcut_options_map_onto_the_same_config_keys_as_the_cli() -> None:
    from worker.config import SHORTCUTS, PeftMethod

    assert JobSubmission.shortcut_keys() == {name: SHORTCUTS[name] for name in JobSubmission.shortcut_keys()}
    assert set(JobSubmission.model_fields["peft"].annotation.__args__[0].__args__) == {m.value for m in PeftMethod}


def test_explicit_overrides_win_over_shortcuts_and_booleans_stay_yaml() -> None:
    submission = JobSubmission(stage="train", epochs=3, resume=True, overrides={"train.epochs": "4"})

    assert submission.config_overrides() == {"train.epochs": "4", "train.resume": "true"}


def test_the_token_and_the_opt_out_come_from_the_environment(
    service_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    monkeypatch.setenv("API_AUTH_DISABLED", "0")
    reset_settings()
    client = TestClient(create_app())
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer from-the-environment"}).status_code == 200

    monkeypatch.setenv("API_TOKEN", "")
    monkeypatch.setenv("API_AUTH_DISABLED", "1")
    reset_settings()
    assert TestClient(create_app()).get("/jobs").status_code == 200


# --- reports ----------------------------------------------------------------------------------------------------


def _insert_job(stage: str, state: str, artifacts: dict[str, str]) -> int:
    from db.models import Job

    with transaction() as session:
        job = Job(stage=stage, state=state, params={}, config={}, artifacts=artifacts)
        session.add(job)
        session.flush()
        return job.id


def _write_report(folder: Path, label: str) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "report.html").write_text(f"<html><body>{label}</body></html>")
    (folder / "report.json").write_text(f'{{"label": "{label}"}}')
    return {"html": str(folder / "report.html"), "json": str(folder / "report.json")}


def test_reports_are_served_as_html_or_json_by_the_accept_header(client: TestClient, service_env: Path) -> None:
    artifacts = get_settings().artifacts_root
    older = _insert_job("report", "SUCCEEDED", _write_report(artifacts / "r1", "first"))
    newer = _insert_job("report", "SUCCEEDED", _write_report(artifacts / "r2", "second"))
    _insert_job("report", "RUNNING", {})
    _insert_job("train", "SUCCEEDED", {})

    html = client.get(f"/reports/{older}", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    data = client.get(f"/reports/{older}", headers={"Accept": "application/json"})
    latest = client.get("/reports/latest", headers={"Accept": "*/*"})

    assert html.headers["content-type"].startswith("text/html")
    assert "first" in html.text
    assert data.json() == {"label": "first"}
    assert latest.json() == {"label": "second"}
    assert client.get(f"/reports/{newer}", headers={"Accept": "application/json;q=0.5, text/html"}).text.startswith(
        "<html>"
    )


def test_reports_that_are_not_there_are_404(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/reports/latest").status_code == 404
    running = _insert_job("report", "RUNNING", {})
    training = _insert_job("train", "SUCCEEDED", {})
    outside = _insert_job("report", "SUCCEEDED", _write_report(tmp_path / "elsewhere", "x"))

    assert "not a report" in client.get(f"/reports/{training}").json()["detail"]
    assert "RUNNING" in client.get(f"/reports/{running}").json()["detail"]
    assert client.get(f"/reports/{outside}").status_code == 404
    assert client.get("/reports/999").status_code == 404
    assert client.get("/reports/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
