"""A checkpoint of the wrong kind is refused when the job is submitted (CLI exit 2, API 422 naming the
param), for every stage that reads one, before any job row exists; the torch-free reader tells the kinds of
real `train` and `train-full` checkpoints apart."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import JobEnv, invoke

from jobs.core.settings import reset_settings
from jobs.core.stages import CHECKPOINT_KINDS, Stage
from worker.checkpoint_info import TRAIN, TRAIN_FULL, NotACheckpoint, checkpoint_kind, read_header
from worker.config import RunConfig
from worker.recorder import MemoryRecorder

TOKEN = "test-token-0123456789"
FLAG = {"checkpoint": "--checkpoint", "siglip_checkpoint": "--siglip-checkpoint"}


def _short(config: RunConfig, run_dir: Path) -> RunConfig:
    return config.model_copy(update={
        "paths": config.paths.model_copy(update={"run_dir": str(run_dir)}),
        "train": config.train.model_copy(update={"epochs": 1, "limit_train_batches": 2}),
        "generation": config.generation.model_copy(update={"epochs": 1}),
    })  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(smoke_config: RunConfig, smoke_prepared, tmp_path_factory) -> SimpleNamespace:
    """One real checkpoint of each kind, and a file that is no checkpoint."""
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    tmp = tmp_path_factory.mktemp
    train = train_siglip(_short(smoke_config, tmp("train")), MemoryRecorder()).artifacts["best_checkpoint"]
    full = train_full(_short(smoke_config, tmp("full")), MemoryRecorder(), siglip_checkpoint=train)
    junk = tmp("junk") / "notes.ckpt"
    junk.write_text("not a checkpoint")
    return SimpleNamespace(**{TRAIN: train, TRAIN_FULL: full.artifacts["best_checkpoint"], "junk": str(junk)})


def test_the_reader_tells_the_kinds_apart_without_loading_tensors(checkpoints) -> None:
    assert checkpoint_kind(read_header(checkpoints.train)) == TRAIN
    assert checkpoint_kind(read_header(getattr(checkpoints, TRAIN_FULL))) == TRAIN_FULL
    assert read_header(checkpoints.train)["run_config"]["model"]["siglip_revision"].startswith("sha256:")
    with pytest.raises(NotACheckpoint, match="is not a checkpoint file"):
        read_header(checkpoints.junk)


def _wrong_cases() -> list[tuple[Stage, str, str]]:
    """(stage, param, a kind it does not take) for every stage that reads a checkpoint, plus a junk file."""
    cases = []
    for stage, params in CHECKPOINT_KINDS.items():
        for name, kinds in params.items():
            cases += [(stage, name, kind) for kind in (TRAIN, TRAIN_FULL, "junk") if kind not in kinds]
    return cases


@pytest.fixture
def roots(job_env: JobEnv, smoke_config: RunConfig, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """The session's checkpoints lie under a data root of this job system."""
    monkeypatch.setenv("MEDVL_VAR_DIR", str(smoke_config.paths.var_dir))
    monkeypatch.setenv("MEDVL_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    reset_settings()


@pytest.mark.parametrize(("stage", "param", "kind"), _wrong_cases())
def test_the_cli_refuses_a_wrong_kind_before_a_job_exists(roots, checkpoints, stage, param, kind) -> None:
    path = getattr(checkpoints, kind)
    for command in ("run", "submit"):
        images = ["--images", path] if stage == Stage.predict else []  # any file under the roots
        result = invoke(command, stage.value, FLAG[param], path, *images)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
        assert f"params.{param}: {path} is " in result.stderr and f"`{stage.value}` takes" in result.stderr
    assert invoke("list", "--json").stdout.strip() == "[]"


def test_the_right_kinds_pass_the_check(roots, checkpoints) -> None:
    from jobs.core.checkpoint_kinds import check_checkpoint_kinds

    for stage, params in CHECKPOINT_KINDS.items():
        for name, kinds in params.items():
            for kind in kinds:
                check_checkpoint_kinds(stage, {name: getattr(checkpoints, kind)})
    check_checkpoint_kinds(Stage.evaluate, {"checkpoint": "/not/yet/written.ckpt"})  # left to the worker


def test_the_api_answers_422_naming_the_param(roots, checkpoints) -> None:
    from api.app import create_app
    from api.deps import ApiSettings

    with TestClient(create_app(ApiSettings(api_token=TOKEN, auth_disabled=False))) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        body = {"stage": "qualitative", "preset": "smoke", "params": {"checkpoint": checkpoints.train}}
        response = client.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "params", "checkpoint"]
        assert "`qualitative` takes the best_checkpoint of `train-full`" in error["msg"]
        assert client.get("/jobs").json() == []


@pytest.mark.parametrize("stage", [Stage.predict, Stage.export])
def test_jobs_list_shows_the_checkpoints_peft_method_not_the_presets(roots, checkpoints, stage) -> None:
    from jobs.core.schemas import SubmitRequest
    from jobs.core.stages import StageParams
    from jobs.service.submission import create_job

    images = [checkpoints.train] if stage == Stage.predict else None
    params = StageParams(checkpoint=checkpoints.train, images=images)
    # The smoke checkpoint is LoRA; the request asks for QLoRA, which a checkpoint-reading stage cannot change.
    job, _ = create_job(SubmitRequest(stage=stage, preset="smoke", overrides={"peft.method": "qlora"}, params=params))
    assert job.config["peft"]["method"] == "lora"
    row = next(line for line in invoke("list").stdout.splitlines() if f" {stage.value} " in line)
    assert row.split("│")[3].strip() == "lora", row  # the table's peft column


def test_a_checkpoint_written_after_submission_is_checked_again_by_the_worker(roots, checkpoints, tmp_path) -> None:
    import shutil

    from jobs.core.schemas import JobState, SubmitRequest
    from jobs.core.stages import StageParams
    from jobs.execution.claim import WorkerIdentity
    from jobs.execution.runner import execute_job
    from jobs.service.queries import get_job
    from jobs.service.submission import create_job

    later = tmp_path / "later.ckpt"  # not there yet: the submission leaves it to the worker
    job, _ = create_job(SubmitRequest(stage=Stage.evaluate, preset="smoke", params=StageParams(checkpoint=str(later))))
    shutil.copy(checkpoints.train, later)  # ...which then finds a train checkpoint there
    execute_job(job.id, WorkerIdentity.current())
    final = get_job(job.id)
    assert final.state is JobState.FAILED
    assert f"params.checkpoint: {later} is a checkpoint of `train`" in final.error
