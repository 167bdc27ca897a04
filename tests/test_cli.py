"""The `jobs` command: options, output formats, error messages, and that it starts without torch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jobs_fixtures import REPO, invoke, run_cli, use_fake_stages, wait_for
from sqlalchemy import update

from db.models import Job
from jobs import service
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest


@pytest.fixture
def fake(job_env, monkeypatch):
    use_fake_stages(monkeypatch)
    return job_env


def test_the_cli_starts_and_reads_jobs_without_importing_torch(job_env):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from jobs.cli.main import app\n"
        "import jobs.execution.tasks  # what a worker's parent process loads\n"
        "result = CliRunner().invoke(app, ['list', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **job_env.variables}, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("JOBS_ARTIFACTS_URL", "gs://bucket/x", "String should match pattern"),
        ("JOBS_HEARTBEAT_S", "-1", "greater than 0"),
    ],
)
def test_a_setting_that_does_not_validate_is_one_line_naming_it(job_env, name, value, fragment):
    completed = run_cli(job_env.__class__(job_env.root, {**job_env.variables, name: value}), "list")
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"error: {name}={value!r}: ") and fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["submit", "train", "--peft", "dora"], ["'peft.method'", "'lora' or 'qlora'"]),  # a config error
        (["list", "--state", "nope"], ["'--state'", "'queued', 'running'"]),  # a usage error
        (
            [
                *("submit", "train", "--set", "model.siglip=configs/../../../../etc"),
                *("--set", "model.build_tiny_fixtures=false"),
            ],
            ["model.siglip: 'configs/../../../../etc' is outside the allowed roots", "hub id"],
        ),
        (["submit", "train", "--idempotency-key", "k\udcff"], ["'idempotency_key'", "surrogate"]),  # bytes not UTF-8
        (["status", "2147483648"], ["'job_id'", "2147483647"]),
    ],
)
def test_a_bad_option_is_one_line_naming_the_key_and_allowed_values_with_exit_2(job_env, args, fragments):
    completed = run_cli(job_env, *args)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and completed.stderr.strip().count("\n") == 0, completed.stderr
    assert all(fragment in completed.stderr for fragment in fragments), completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "train", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
        (["run", "train", "--set", "train.epochs"], "--set expects KEY=VALUE"),
        (["submit", "train", "--preset", "nope"], "unknown preset 'nope'; allowed values:"),
        (["submit", "train", "--projection", "Oblique"], "'data.projection'"),
        (["run", "evaluate"], "needs --checkpoint"),
        (["submit", "qualitative", "--checkpoint", "x", "--split", "all"], "invalid value for 'split'"),
        (["submit", "report", "--compare-job", "0"], "invalid value for 'compare_job'"),
        (["results", "--stage", "nope"], "--stage: unknown stage 'nope'"),
        (["worker", "--queues", "gpu,tpu"], "--queues: unknown queue ['tpu']"),
        (["submit", "train", "--data-dir", "/etc"], "data.data_dir: '/etc' is outside the allowed roots"),
        (["run", "evaluate", "--checkpoint", "/etc/passwd"], "params.checkpoint: '/etc/passwd' is outside"),
        (["submit", "train-full", "--siglip-checkpoint", "../x.ckpt"], "params.siglip_checkpoint: "),
        (["submit", "train", "--config", "/etc/hosts"], "config: '/etc/hosts' is outside the allowed roots"),
        (["submit", "train", "--set", "paths.var_dir=/tmp"], "paths.var_dir: "),
        (["submit", "train", "--preset", "../../../../etc/x"], "unknown preset '../../../../etc/x'; allowed values:"),
        (["submit", "train", "--source", "synthetic", "--data-dir", "var/iu"], "use source=local (--source local)"),
        (["submit", "report", "--compare-job", str(2**70)], "invalid value for 'compare_job'"),
        (["submit", "train", "--set", "train.lr=.nan"], "'train.lr'"),
        (["metrics", str(2**31)], "2147483647"),
    ],
)
def test_bad_input_exits_2_with_the_problem_named(job_env, args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert service.list_jobs() == []


def test_a_data_dir_with_the_smoke_preset_reads_that_folder(job_env):
    data = REPO / "var" / "iu-copy"

    result = invoke("submit", "train", "--data-dir", str(data), "--json")

    assert result.exit_code == 0, result.output
    data_config = json.loads(result.stdout)["config"]["data"]
    assert (data_config["source"], data_config["data_dir"]) == ("local", str(data))


def test_an_idempotency_key_reused_for_another_request_exits_2_naming_the_first_job(job_env):
    first = invoke("submit", "train", "--idempotency-key", "k-2").stdout.strip()

    result = invoke("submit", "train", "--epochs", "3", "--idempotency-key", "k-2")

    assert result.exit_code == 2, result.output
    assert f"first used for job {first}" in result.stderr and "new key" in result.stderr
    assert len(service.list_jobs()) == 1


def test_flower_refuses_to_start_without_basic_auth(job_env, monkeypatch):
    from jobs.core.settings import reset_settings

    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    reset_settings()
    result = invoke("flower")
    assert result.exit_code == 2 and "FLOWER_BASIC_AUTH" in result.stderr


def test_unknown_ids_exit_1(job_env):
    for args in (["status", "7"], ["logs", "7"], ["cancel", "7"], ["metrics", "7"]):
        result = invoke(*args)
        assert result.exit_code == 1 and "no " in result.stderr and "7" in result.stderr, args


def test_stage_options_become_config_overrides_and_params(job_env):
    result = invoke(
        "submit", "train", "--epochs", "3", "--batch-size", "8", "--lr", "0.001", "--peft", "qlora", "--seed", "7",
        "--projection", "Lateral", "--resume", "--set", "train.warmup_steps=0", "--set", "peft.r=4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    config = job["config"]
    assert (config["train"]["epochs"], config["train"]["batch_size"], config["train"]["lr"]) == (3, 8, 0.001)
    assert (config["peft"]["method"], config["peft"]["r"], config["seed"]) == ("qlora", 4, 7)
    assert config["data"]["projection"] == "Lateral" and config["train"]["resume"] is True
    assert config["train"]["warmup_steps"] == 0
    evaluate = json.loads(invoke("submit", "evaluate", "--checkpoint", "var/c.ckpt", "--split", "val", "--json").stdout)
    # A path option is relative to where the command runs; the job keeps the absolute file that was checked.
    assert evaluate["params"] == {"checkpoint": str((Path.cwd() / "var" / "c.ckpt").resolve()), "split": "val"}


def test_the_same_idempotency_key_prints_the_same_job(job_env):
    first = invoke("submit", "train", "--idempotency-key", "k-1").stdout.strip()
    second = invoke("submit", "train", "--idempotency-key", "k-1").stdout.strip()
    assert first == second and first.isdigit()
    assert len(service.list_jobs()) == 1


def test_run_records_in_the_tables_and_the_read_commands_show_it(fake):
    result = invoke("run", "train", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    stage_result = json.loads(result.stdout)
    assert stage_result["status"] == "succeeded" and stage_result["state"] == "SUCCEEDED"
    assert stage_result["metrics"]["epochs_run"] == 2
    job_id = stage_result["job_id"]

    status = json.loads(invoke("status", str(job_id), "--json").stdout)
    assert status["state"] == "SUCCEEDED" and status["progress"]["percent"] == 100.0
    listed = json.loads(invoke("list", "--state", "SUCCEEDED", "--json").stdout)
    assert [job["id"] for job in listed] == [job_id]
    assert json.loads(invoke("list", "--state", "FAILED", "--json").stdout) == []
    [experiment] = json.loads(invoke("results", "--stage", "train", "--peft", "lora", "--json").stdout)
    assert experiment["job_id"] == job_id and experiment["metrics"]["samples_per_s"] == 123.5
    assert json.loads(invoke("results", "--peft", "qlora", "--json").stdout) == []
    metrics = json.loads(invoke("metrics", str(experiment["id"]), "--json").stdout)
    assert {(m["name"], m["epoch"]) for m in metrics} >= {("train_loss", 0), ("train_loss", 1), ("val_loss", 1)}
    assert "epoch 1 done" in json.loads(invoke("logs", str(job_id), "--json").stdout)["log"]
    assert "epoch 1 done" in invoke("logs", str(job_id), "--follow").stdout  # a finished job: prints and returns

    table = invoke("list").stdout
    assert "SUCCEEDED" in table and str(job_id) in table
    assert "best val loss" in invoke("results").stdout
    assert "SUCCEEDED" in invoke("status", str(job_id)).stdout


def test_metrics_of_a_job_that_ran_no_stage_itself_are_its_childrens(fake):
    first = json.loads(invoke("run", "train", "--epochs", "2", "--json").stdout)["job_id"]
    second = json.loads(invoke("run", "train", "--epochs", "3", "--json").stdout)["job_id"]
    parent = service.create_job(SubmitRequest(stage="prepare-data"))[0].id
    with transaction() as session:  # as a comparison's children point at their parent
        session.execute(update(Job).where(Job.id.in_([first, second])).values(parent_id=parent))

    rows = json.loads(invoke("metrics", str(parent), "--name", "val_loss", "--json").stdout)
    assert len({row["experiment_id"] for row in rows}) == 2 and len(rows) == 2 + 3
    assert "experiment" in invoke("metrics", str(parent), "--name", "val_loss").stdout.splitlines()[1]


@pytest.mark.parametrize(("failed", "allowed", "exits"), [(0, False, False), (2, False, True), (2, True, False)])
def test_predict_counts_are_printed_and_an_unreadable_file_exits_1_unless_allowed(failed, allowed, exits, capsys):
    import typer

    from jobs.cli.commands import _check_predict_counts

    metrics = {"num_files": 3, "num_predicted": 3 - failed, "num_failed": failed}
    if exits:
        with pytest.raises(typer.Exit):
            _check_predict_counts(metrics, allowed, quiet=False)
    else:
        _check_predict_counts(metrics, allowed, quiet=False)
    assert f"predicted {3 - failed} of 3 files; {failed} could not be read" in capsys.readouterr().err


def test_run_of_a_failing_stage_exits_1_with_the_error(fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EPOCH", "1")
    result = invoke("run", "train", "--epochs", "3")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "fake failure at epoch 1" in result.stderr
    [job] = service.list_jobs()
    assert job.state is JobState.FAILED


def test_cancel_of_a_queued_job_prints_its_state(job_env):
    job_id = invoke("submit", "train").stdout.strip()
    result = invoke("cancel", job_id)
    assert result.exit_code == 0 and "CANCELLED" in result.stdout


def test_publish_of_a_job_without_a_publish_pending_is_refused_in_one_line(job_env):
    job_id = invoke("submit", "train").stdout.strip()
    result = invoke("publish", job_id)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and f"job {job_id} has no publish pending" in result.stderr
    assert service.get_job(int(job_id)).state is JobState.QUEUED


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    import httpx

    try:
        return httpx.get(url, auth=auth, timeout=2).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.parametrize("service_name", ["flower", "api"])
def test_the_service_commands_start_the_services(job_env, service_name):
    port = _free_port()
    env = {**os.environ, **job_env.variables, "FLOWER_BASIC_AUTH": "admin:s3cret", "API_TOKEN": "t0ken"}
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/jobs"), service_name, "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        if service_name == "flower":
            url = f"http://127.0.0.1:{port}/"
            wait_for(lambda: _status(url) is not None, 30, "Flower to listen")
            assert _status(url) == 401
            assert _status(url, ("admin", "s3cret")) == 200
        else:
            url = f"http://127.0.0.1:{port}/healthz"
            wait_for(lambda: _status(url) is not None, 30, "the API to listen")
            assert _status(url) == 200
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
