"""Bad input against the real service on both backends (SQLite; PostgreSQL with Redis): every probe that
once gave a 500, or was accepted when it should not be, answers a 4xx that names the field, with a body
that is valid JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import BACKENDS, JobEnv, both_backends

from api.app import create_app
from api.deps import ApiSettings
from db.models import MAX_ROW_ID

TOKEN = "bad-input-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    monkeypatch.setenv("MEDVL_VAR_DIR", str(tmp_path / "var"))
    yield from both_backends(request.param, tmp_path, monkeypatch)


@pytest.fixture
def client(backend: JobEnv) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(TOKEN, False)), raise_server_exceptions=False) as test_client:
        yield test_client


def _strict_json(response) -> object:  # type: ignore[no-untyped-def]
    """The body as JSON, refusing the NaN and Infinity that Python's json would otherwise accept."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in {response.text[:200]}")

    return json.loads(response.text, parse_constant=refuse)


def _post_raw(client: TestClient, text: str, headers: dict[str, str] = HEADERS):  # type: ignore[no-untyped-def]
    return client.post("/jobs", content=text.encode("utf-8"), headers=headers)


def _locations(response) -> list[list]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return [error["loc"] for error in _strict_json(response)["detail"]]


def _body(**fields: object) -> str:
    return json.dumps({"stage": "train", "preset": "smoke", **fields})


# --- NUL bytes and unpaired surrogates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"data_dir": "var/data\x00/x"}, ["body", "data_dir"]),
        ({"config": "configs/smoke.yaml\x00"}, ["body", "config"]),
        ({"stage": "evaluate", "params": {"checkpoint": "var/a\x00.ckpt"}}, ["body", "params", "checkpoint"]),
        (
            {"stage": "train-full", "params": {"siglip_checkpoint": "\x00"}},
            ["body", "params", "siglip_checkpoint"],
        ),
        ({"overrides": {"paths.run_dir": "var/x\x00"}}, ["body", "overrides", "paths.run_dir"]),
        ({"overrides": {"model.siglip": "owner/name\x00"}}, ["body", "overrides", "model.siglip"]),
        ({"idempotency_key": "key\x00"}, ["body", "idempotency_key"]),
    ],
)
def test_a_nul_byte_in_any_string_is_422_naming_the_field(client: TestClient, fields: dict, location: list) -> None:
    response = _post_raw(client, _body(**fields))

    assert location in _locations(response)
    assert "NUL" in response.text


@pytest.mark.parametrize(
    ("raw_field", "location"),
    [
        ('"idempotency_key": "a\\ud800b"', ["body", "idempotency_key"]),
        ('"overrides": {"peft.r": "\\udfff"}', ["body", "overrides", "peft.r"]),
        ('"overrides": {"\\ud800": "4"}', ["body", "overrides"]),
        ('"data_dir": "var/\\ud83d"', ["body", "data_dir"]),
    ],
)
def test_an_unpaired_surrogate_is_422_naming_the_field(client: TestClient, raw_field: str, location: list) -> None:
    response = _post_raw(client, '{"stage": "train", "preset": "smoke", ' + raw_field + "}")

    locations = _locations(response)  # the echoed input (and a bad override's key) is escaped into valid JSON

    assert location[:2] in [loc[:2] for loc in locations]
    assert "surrogate" in response.text


def test_a_paired_surrogate_escape_is_an_ordinary_character(client: TestClient) -> None:
    response = _post_raw(client, _body(idempotency_key="\U0001f600 nightly"))

    assert response.status_code == 202, response.text
    assert response.json()["idempotency_key"] == "\U0001f600 nightly"


# --- non-finite numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ('{"stage": "train", "lr": NaN}', ["body", "lr"]),
        ('{"stage": "train", "lr": Infinity}', ["body", "lr"]),
        ('{"stage": "train", "epochs": -Infinity}', ["body", "epochs"]),
        ('{"stage": "train", "lr": 1e400}', ["body", "lr"]),
        ('{"stage": "qualitative", "params": {"num_samples": 1e400}}', ["body", "params", "num_samples"]),
        ('{"stage": "report", "params": {"compare_job": NaN}}', ["body", "params", "compare_job"]),
        ("NaN", ["body"]),
    ],
)
def test_non_finite_numbers_are_422_with_a_valid_json_body(client: TestClient, raw: str, location: list) -> None:
    response = _post_raw(client, raw)

    assert location in _locations(response)


# --- ids and numbers the database cannot hold --------------------------------------------------------------------

ID_ROUTES = [
    ("get", "/jobs/{}"),
    ("get", "/jobs/{}/logs"),
    ("post", "/jobs/{}/cancel"),
    ("get", "/experiments/{}/metrics"),
    ("get", "/reports/{}"),
]


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
@pytest.mark.parametrize("number", [MAX_ROW_ID + 1, 2**63, 2**70])
def test_ids_beyond_the_id_columns_are_422(client: TestClient, method: str, path: str, number: int) -> None:
    response = client.request(method, path.format(number), headers=HEADERS)

    assert response.status_code == 422, response.text
    assert str(MAX_ROW_ID) in response.text


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
def test_the_largest_id_is_an_honest_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path.format(MAX_ROW_ID), headers=HEADERS)

    assert response.status_code == 404, response.text


@pytest.mark.parametrize("number", [MAX_ROW_ID + 1, 2**70])
def test_a_compare_job_beyond_the_id_columns_is_422(client: TestClient, number: int) -> None:
    response = _post_raw(client, _body(stage="report", params={"compare_job": number}))

    assert ["body", "params", "compare_job"] in _locations(response)


# --- files and models --------------------------------------------------------------------------------------------


def test_a_model_key_cannot_reach_outside_the_roots(client: TestClient) -> None:
    overrides = {"model.siglip": "configs/../../../../etc", "model.build_tiny_fixtures": "false"}

    response = _post_raw(client, _body(overrides=overrides))

    assert ["body", "overrides", "model.siglip"] in _locations(response)
    message = response.json()["detail"][0]["msg"]
    assert "outside the allowed roots" in message and "hub id" in message
    assert client.get("/jobs", headers=HEADERS).json() == []


def test_a_model_from_a_config_file_is_checked_too(client: TestClient, backend: JobEnv) -> None:
    config = backend.root / "var" / "escape.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("model:\n  biogpt: /usr/share\n")

    response = _post_raw(client, json.dumps({"stage": "train", "config": str(config)}))

    assert ["body", "config"] in _locations(response)
    assert "model.biogpt" in response.json()["detail"][0]["msg"]


# --- the token comes first ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["{not json", '{"stage": "train", "lr": NaN}', "[]", '{"stage": "bake"}'])
def test_without_the_token_any_body_is_401_before_it_is_read(client: TestClient, raw: str) -> None:
    response = _post_raw(client, raw, headers={"Content-Type": "application/json"})

    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_with_the_token_a_malformed_body_is_422(client: TestClient) -> None:
    assert _post_raw(client, "{not json").status_code == 422
