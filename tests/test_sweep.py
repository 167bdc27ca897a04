"""Sweeps: the grid's runs, their validation (CLI and API), the plan's rows, and a 2x2 sweep through a worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import JobEnv, Worker, invoke, use_fake_stages, wait_for
from sqlalchemy import select

from api.app import create_app
from api.deps import ApiSettings
from db.models import Job
from jobs import service
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import MAX_SWEEP_RUNS, Stage, StageParams
from jobs.pipelines.grid import GridError, expand
from jobs.pipelines.plan import create_plan, plan_runs
from worker.config import load_config

GRID = {"peft.method": ["lora", "qlora"], "peft.r": ["8", "16"]}


def _sweep(grid=GRID, **params) -> SubmitRequest:
    return SubmitRequest(stage=Stage.sweep, preset="smoke", params=StageParams(grid=grid, **params))


def test_the_grid_expands_to_every_combination_and_seed_with_validated_values():
    runs = expand(GRID, [1, 2], preset="smoke", overrides={"train.epochs": "2"})
    assert [(run.cell["peft.method"], run.cell["peft.r"], run.seed) for run in runs] == [
        (m, r, s) for m in ("lora", "qlora") for r in (8, 16) for s in (1, 2)
    ]
    for run in runs:
        assert run.config["peft"]["r"] == run.cell["peft.r"] and run.config["seed"] == run.seed
        assert run.config["train"]["epochs"] == 2
    # The split has a seed of its own: every seed and grid point share one prepared data and one split.
    assert len({run.data_key() for run in runs}) == 1
    assert {run.config["data"]["split_seed"] for run in runs} == {42}


@pytest.mark.parametrize(
    ("grid", "seeds", "words"),
    [
        ({"peft.rank": ["8"]}, [1], ["peft.rank", "allowed", "r, alpha"]),
        ({"peft.r": ["8", "big"]}, [1], ["peft.r", "integer"]),
        ({"peft.method": ["lora", "dora"]}, [1], ["peft.method", "dora"]),
        ({"seed": ["1", "2"]}, [1], ["--seeds"]),
        ({"peft.r": [str(r) for r in range(1, 9)], "train.epochs": [str(e) for e in range(1, 10)]}, [1], ["at most"]),
        ({"peft.r": ["8", "16"]}, list(range(MAX_SWEEP_RUNS // 2 + 1)), ["seeds", "at most"]),
        # Refused from the counts alone: the product of 8 keys of 64 values is never built.
        ({f"peft.k{i}": [str(v) for v in range(64)] for i in range(8)}, [1], ["281474976710656 configurations"]),
    ],
)
def test_a_bad_grid_is_one_error_naming_the_key(grid, seeds, words):
    with pytest.raises(GridError) as error:
        expand(grid, seeds, preset="smoke", overrides={})
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.usefixtures("job_env")
def test_the_plan_has_one_prepare_for_every_seed_and_one_branch_per_run():
    request = _sweep(seed_list=[3, 5], metric="val_loss", mode="min")
    config = load_config("smoke").to_dict()
    plan = create_plan(request, config, plan_runs(request, config), with_generation=False)
    with transaction() as session:
        children = list(session.scalars(select(Job).where(Job.parent_id == plan.parent_id).order_by(Job.id)))
        parent = session.get(Job, plan.parent_id)
        params = parent.params
    # The seeds vary training only: one split, so one data preparation for all of them.
    assert [c.stage for c in children] == ["prepare-data"] + ["train"] * 8 + ["report"]
    assert {c.config["data"]["split_seed"] for c in children} == {42}
    assert {(c.config["peft"]["method"], c.config["peft"]["r"], c.config["seed"]) for c in children[1:9]} == {
        (m, r, s) for m in ("lora", "qlora") for r in (8, 16) for s in (3, 5)
    }
    assert params["grid"] == GRID and params["seed_list"] == [3, 5]
    assert (params["metric"], params["mode"]) == ("val_loss", "min")
    assert plan.branch(**{"peft.method": "qlora", "peft.r": 16}).seed == 3


def test_seeds_n_counts_up_from_the_config_seed_and_compare_is_the_method_sweep():
    config = load_config("smoke").to_dict()
    request = SubmitRequest(stage=Stage.compare, preset="smoke", params=StageParams(seeds=3))
    runs = plan_runs(request, config)
    assert [(run.cell, run.seed) for run in runs] == [
        ({"peft.method": m}, config["seed"] + i) for m in ("lora", "qlora") for i in range(3)
    ]


@pytest.mark.parametrize(
    ("stage", "args", "words"),
    [
        ("sweep", ["--grid", "peft.rank=8,16"], ["peft.rank", "allowed"]),
        ("sweep", ["--grid", "peft.r=8,x"], ["peft.r"]),
        ("sweep", ["--grid", "peft.r"], ["--grid expects KEY=V1,V2"]),
        ("sweep", ["--grid", "peft.r=8,16", "--metric", "accuracy"], ["unknown metric 'accuracy'", "best_val_loss"]),
        ("sweep", ["--grid", "peft.r=8,16", "--mode", "best"], ["mode"]),
        ("sweep", ["--grid", "peft.r=8,16", "--seeds", "2", "--seed-list", "1,2"], ["not both"]),
        ("sweep", ["--grid", "peft.r=8,16", "--seed-list", "1,1"], ["repeats"]),
        ("compare", ["--grid", "peft.r=8,16"], ["compare always runs peft.method=lora,qlora"]),
        ("compare", ["--metric", "val_loss"], ["use `jobs submit sweep`"]),
    ],
)
@pytest.mark.usefixtures("job_env")
def test_the_cli_refuses_a_bad_sweep_in_one_line_with_exit_2(stage, args, words):
    result = invoke("submit", stage, *args)
    assert result.exit_code == 2, result.output
    assert all(word in result.output for word in words), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert service.list_jobs() == []


@pytest.fixture
def client(job_env: JobEnv, tmp_path: Path):
    settings = ApiSettings(api_token=None, auth_disabled=True)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_api_queues_a_sweep_with_its_children(client: TestClient):
    body = {"stage": "sweep", "preset": "smoke", "params": {"grid": GRID, "seeds": 2, "metric": "i2t_recall@1"}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    parent = response.json()
    assert parent["stage"] == "sweep" and parent["state"] == "RUNNING"
    assert parent["params"]["grid"] == GRID and parent["params"]["metric"] == "i2t_recall@1"
    assert sorted(c["stage"] for c in parent["children"]) == ["prepare-data"] + ["report"] + ["train"] * 8


@pytest.mark.parametrize(
    ("params", "location", "words"),
    [
        ({"grid": {"peft.rank": ["8"]}}, ["body"], ["peft.rank"]),
        ({"grid": {"peft.r": ["8", "16"]}, "seeds": 99}, ["body", "params", "seeds"], []),
        ({"grid": {"peft.r": [str(r) for r in range(1, 80)]}}, ["body", "params"], ["1 to 64"]),
        ({"grid": {"paths.run_dir": ["/tmp/elsewhere"]}}, ["body", "params", "grid", "paths.run_dir", "0"], []),
        ({"grid": {"peft.r": ["8"]}, "metric": "accuracy"}, ["body"], ["unknown metric"]),
    ],
)
def test_the_api_refuses_a_bad_sweep_naming_the_field(client: TestClient, params, location, words):
    response = client.post("/jobs", json={"stage": "sweep", "preset": "smoke", "params": params})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert location in [error["loc"] for error in detail], detail
    assert all(word in json.dumps(detail) for word in words), detail
    assert client.get("/jobs").json() == []


@pytest.mark.slow
def test_a_2x2_sweep_runs_through_a_worker_and_its_report_groups_by_both_keys(job_env: JobEnv, monkeypatch):
    use_fake_stages(monkeypatch)
    worker = Worker(job_env, name="sweep")
    try:
        result = invoke("submit", "sweep", "--grid", "peft.method=lora,qlora", "--grid", "peft.r=8,16",
                        "--epochs", "2", "--metric", "i2t_recall@1", "--mode", "max")  # fmt: skip
        assert result.exit_code == 0, result.output
        parent_id = int(result.stdout.strip())
        wait_for(lambda: service.get_job(parent_id).state.finished, 120, "the sweep to finish", worker)
    finally:
        worker.stop()
    parent = service.get_job(parent_id)
    assert parent.state is JobState.SUCCEEDED, parent.error
    assert all(c.state is JobState.SUCCEEDED for c in parent.children)
    report = json.loads(Path(parent.artifacts["json"]).read_text())
    report_job = next(c for c in parent.children if c.stage == "report")
    assert (report["kind"], report["compare_job_id"], report["report_job_id"]) == ("sweep", parent_id, report_job.id)
    assert report["grid_keys"] == ["peft.method", "peft.r"]
    assert [c["values"] for c in report["cells"]] == [
        {"peft.method": m, "peft.r": r} for m in ("lora", "qlora") for r in (8, 16)
    ]
    train_jobs = {
        (c.config["peft"]["method"], c.config["peft"]["r"]): c.id for c in parent.children if c.stage == "train"
    }
    recorded = {(c["values"]["peft.method"], c["values"]["peft.r"]): c["experiments"] for c in report["cells"]}
    seed = str(parent.config["seed"])
    assert {key: e[seed]["train"]["job_id"] for key, e in recorded.items()} == train_jobs
    assert set(report["groups"]) == {"peft.method", "peft.r"}
    assert report["best"] is not None and report["metric"] == "i2t_recall@1" and report["mode"] == "max"
    text = Path(parent.artifacts["markdown"]).read_text()
    assert "## By peft.method" in text and "## By peft.r" in text
    assert "| peft.method | peft.r | Image-to-text recall@1, validation (0-1) |" in text
    assert (Path(parent.artifacts["json"]).parent / "metric_bars.png").is_file()
