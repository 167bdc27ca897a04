"""Offline compute nodes: with HF_HUB_OFFLINE=1 and the models in the Hugging Face cache, every stage runs and
pins the cached snapshot's commit without asking the hub; a model that is not cached fails in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from jobs_fixtures import JobEnv, run_cli
from PIL import Image

from worker.base_models import base_dir, cached_commit, hub_commit
from worker.checkpoint_info import recorded_config
from worker.config import RunConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODELS = {"siglip": "medvl-test/tiny-siglip", "biogpt": "medvl-test/tiny-biogpt"}


def hub_cache(root: Path, config: RunConfig) -> Path:
    """The smoke preset's tiny models in the hub cache layout: models--OWNER--NAME/snapshots/<commit>, refs/main."""
    for field, repo in MODELS.items():
        folder = root / f"models--{repo.replace('/', '--')}"
        shutil.copytree(base_dir(config, field), folder / "snapshots" / COMMIT)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(COMMIT)
    return root


def test_offline_the_commit_comes_from_the_cache(tmp_path: Path, monkeypatch, smoke_config, smoke_prepared):
    import huggingface_hub.constants

    cache = hub_cache(tmp_path / "hub", smoke_config)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_commit(MODELS["siglip"], None) == COMMIT
    assert cached_commit(MODELS["biogpt"], "main") == COMMIT


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_an_uncached_model_fails_in_one_line_naming_the_download(tmp_path: Path, monkeypatch, variable):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv(variable, "1")
    with pytest.raises(RuntimeError) as failed:
        hub_commit("medvl-test/not-cached", None)
    message = str(failed.value)
    assert "\n" not in message and "'medvl-test/not-cached'" in message
    assert "`hf download medvl-test/not-cached`" in message


@pytest.mark.slow
def test_every_stage_runs_offline_from_the_cache_and_records_its_commit(
    job_env: JobEnv, tmp_path: Path, smoke_config: RunConfig, smoke_prepared
):
    cache = hub_cache(tmp_path / "hf" / "hub", smoke_config)
    env = JobEnv(job_env.root, {
        **job_env.variables, "MEDVL_VAR_DIR": smoke_config.paths.var_dir, "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache),
    })  # fmt: skip
    hub = ["--preset", "smoke", "--set", "model.build_tiny_fixtures=false",
           "--set", f"model.siglip={MODELS['siglip']}", "--set", f"model.biogpt={MODELS['biogpt']}"]  # fmt: skip

    def stage(*args: str) -> dict:
        completed = run_cli(env, "run", *args, *hub, "--json", timeout=900)
        assert completed.returncode == 0, completed.stderr[-4000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    siglip = stage("train", "--epochs", "1", "--set", "train.limit_train_batches=2")["metrics"]["best_checkpoint"]
    assert recorded_config(siglip)["model"]["siglip_revision"] == COMMIT
    generator = stage("train-full", "--siglip-checkpoint", siglip, "--set", "generation.epochs=1")
    checkpoint = generator["metrics"]["best_checkpoint"]
    assert recorded_config(checkpoint)["model"]["biogpt_revision"] == COMMIT
    assert stage("evaluate", "--checkpoint", checkpoint)["metrics"]["num_samples"] > 0
    image = Path(smoke_config.paths.var_dir) / "offline-xray.png"  # under the allowed roots
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(image)
    assert stage("predict", "--checkpoint", checkpoint, "--images", str(image))["metrics"]["num_predicted"] == 1

    absent = run_cli(env, "run", "train", *hub, "--set", "model.siglip=medvl-test/not-cached", timeout=300)
    assert absent.returncode != 0
    last = absent.stderr.strip().splitlines()[-1]
    assert "'medvl-test/not-cached'" in last and "hf download" in last, absent.stderr[-2000:]
