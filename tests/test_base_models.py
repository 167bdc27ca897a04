"""Every checkpoint is bound to the exact base it was trained on: the two-seed sequence of issue 24 gives
the first job's own predictions, and a base whose weights changed is refused at every load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from worker.base_models import BaseMismatch, base_dir, base_source, hub_commit, pin_base, weights_digest
from worker.config import RunConfig
from worker.recorder import MemoryRecorder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _run(config: RunConfig, run_dir: Path, **update: object) -> RunConfig:
    """``config`` writing into ``run_dir``, with a short training and any top-level/section updates."""
    train = config.train.model_copy(update={"epochs": 1, "limit_train_batches": 2})
    config = config.model_copy(update={"paths": config.paths.model_copy(update={"run_dir": str(run_dir)}),
                                       "train": train, **update})  # fmt: skip
    return RunConfig.model_validate(config.to_dict())


def _predict(config: RunConfig, checkpoint: str, images: list[str], run_dir: Path) -> list[dict]:
    from worker.inference.stage import predict_images

    result = predict_images(_run(config, run_dir), MemoryRecorder(), checkpoint=checkpoint, images=images, top_k=3)
    return [json.loads(line) for line in Path(result.artifacts["predictions"]).read_text().splitlines()]


@pytest.fixture(scope="module")
def images(smoke_prepared, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("scans")
    for i, image in enumerate(smoke_prepared.split("test").images[:3]):
        Image.fromarray(np.asarray(image)).save(folder / f"scan-{i}.png")
    return [str(folder)]


@pytest.fixture(scope="module")
def two_seeds(smoke_config: RunConfig, smoke_prepared, images, tmp_path_factory) -> SimpleNamespace:
    """train (seed 42), predict; train --seed 7; predict again with the first job's checkpoint."""
    from worker.siglip.stage import train_siglip

    tmp = tmp_path_factory.mktemp
    first = train_siglip(_run(smoke_config, tmp("seed42")), MemoryRecorder())
    checkpoint = first.artifacts["best_checkpoint"]
    before = _predict(smoke_config, checkpoint, images, tmp("predict-1"))
    weights = Path(base_dir(smoke_config, "siglip")) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = train_siglip(_run(smoke_config, tmp("seed7"), seed=7), MemoryRecorder())
    after = _predict(smoke_config, checkpoint, images, tmp("predict-2"))
    return SimpleNamespace(first=first, second=second, before=before, after=after, weights=weights, stamp=stamp)


def _recorded(checkpoint: str) -> dict:
    from worker.checkpoint_info import recorded_config

    return recorded_config(checkpoint)["model"]


def test_a_second_seed_leaves_the_first_jobs_predictions_unchanged(two_seeds) -> None:
    assert [r["status"] for r in two_seeds.before] == ["predicted"] * 3
    assert two_seeds.after == two_seeds.before  # same reports, same cosines, to the last digit
    assert two_seeds.weights.stat().st_mtime_ns == two_seeds.stamp  # the base was not rebuilt


def test_both_seeds_record_the_base_they_loaded(two_seeds, smoke_config: RunConfig) -> None:
    first = _recorded(two_seeds.first.artifacts["best_checkpoint"])
    second = _recorded(two_seeds.second.artifacts["best_checkpoint"])
    assert first["siglip_revision"] == weights_digest(base_dir(smoke_config, "siglip"))
    assert second["siglip_revision"] == first["siglip_revision"]  # one init for every seed


def _edited_copy(smoke_config: RunConfig, tmp: Path) -> tuple[RunConfig, Path]:
    """A config on a private copy of the tiny SigLIP (a plain local base), and that copy's weights file."""
    copy = tmp / "siglip-copy"
    shutil.copytree(base_dir(smoke_config, "siglip"), copy)
    model = smoke_config.model.model_copy(update={"siglip": str(copy), "build_tiny_fixtures": False})
    return smoke_config.model_copy(update={"model": model}), copy / "model.safetensors"


def _perturb(weights: Path) -> None:
    tensors = load_file(weights)
    name = next(n for n in sorted(tensors) if n.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})


def test_a_changed_local_base_is_refused_at_every_load(smoke_config: RunConfig, smoke_prepared, tmp_path) -> None:
    from worker.export.stage import export
    from worker.siglip.checkpoint import load_finetuned_siglip
    from worker.siglip.stage import train_siglip

    config, weights = _edited_copy(smoke_config, tmp_path)
    trained = train_siglip(_run(config, tmp_path / "train"), MemoryRecorder())
    checkpoint = trained.artifacts["best_checkpoint"]
    recorded = _recorded(checkpoint)["siglip_revision"]
    load_finetuned_siglip(checkpoint)  # the untouched base loads
    _perturb(weights)
    now = weights_digest(weights.parent)
    assert now != recorded
    loads = {
        "predict/evaluate": lambda: load_finetuned_siglip(checkpoint),
        "export": lambda: export(_run(config, tmp_path / "export"), MemoryRecorder(), checkpoint=checkpoint),
        "resume": lambda: train_siglip(_run(config, tmp_path / "train", epochs=2).model_copy(
            update={"train": config.train.model_copy(update={"epochs": 2, "resume": True, "limit_train_batches": 2})}
        ), MemoryRecorder()),
    }  # fmt: skip
    for stage, load in loads.items():
        with pytest.raises(BaseMismatch) as refused:
            load()
        message = str(refused.value)
        assert "\n" not in message, stage
        assert recorded in message and now in message and "model.siglip" in message, (stage, message)


def test_a_hub_base_loads_at_its_pinned_commit_and_only_a_hub_base(smoke_config: RunConfig, smoke_prepared) -> None:
    hub_id = "google/siglip-base-patch16-224"
    pinned_hub = {"build_tiny_fixtures": False, "siglip": hub_id, "siglip_revision": COMMIT}
    model = smoke_config.model.model_copy(update=pinned_hub)
    hub = smoke_config.model_copy(update={"model": model})
    assert base_source(hub, "siglip") == (hub_id, {"revision": COMMIT})
    assert pin_base(hub, "siglip").model.siglip_revision == COMMIT  # a commit needs no network
    pinned = pin_base(smoke_config, "siglip")
    assert base_source(pinned, "siglip") == (base_dir(smoke_config, "siglip"), {})  # a hash is not a revision


def test_an_unreachable_hub_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", offline)
    with pytest.raises(RuntimeError) as refused:
        hub_commit("google/siglip-base-patch16-224", "main", "model.siglip_revision")
    message = str(refused.value)
    assert "\n" not in message
    assert "google/siglip-base-patch16-224" in message and "OfflineModeIsEnabled" in message
    assert "set model.siglip_revision to a commit" in message and "local folder" in message


def test_a_branch_resolves_to_its_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    asked = []

    def model_info(self, repo_id, revision=None, token=None):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=COMMIT)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    assert hub_commit("microsoft/biogpt", None) == COMMIT
    assert asked == [("microsoft/biogpt", None)]


def test_jobs_run_predict_prints_its_files_and_gives_the_first_jobs_results(
    job_env, smoke_config: RunConfig, two_seeds, images, monkeypatch: pytest.MonkeyPatch, tmp_path_factory
) -> None:
    from jobs_fixtures import invoke

    from jobs.core.settings import reset_settings

    monkeypatch.setenv("MEDVL_VAR_DIR", str(smoke_config.paths.var_dir))
    monkeypatch.setenv("MEDVL_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    reset_settings()
    checkpoint = two_seeds.first.artifacts["best_checkpoint"]
    result = invoke("run", "predict", "--set", f"paths.var_dir={smoke_config.paths.var_dir}", "--checkpoint",
                    checkpoint, "--images", *images, "--top-k", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    written = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines() if line.startswith("  "))
    assert Path(written["predictions"]).name == "predictions.jsonl" and Path(written["html"]).is_file()
    records = [json.loads(line) for line in Path(written["predictions"]).read_text().splitlines()]
    assert records == two_seeds.before


def test_a_checkpoint_from_before_pinning_loads_without_a_hub_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from worker.base_models import verified_base

    def no_network(*args, **kwargs):
        raise AssertionError("looked up the hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    old = RunConfig()  # a hub SigLIP, no revision recorded
    assert verified_base(old, "siglip", "checkpoint old.ckpt") is old
    pinned = old.model_copy(update={"model": old.model.model_copy(update={"siglip_revision": COMMIT})})
    assert verified_base(pinned, "siglip", "checkpoint new.ckpt").model.siglip_revision == COMMIT


def test_a_changed_biogpt_is_refused_by_evaluate_and_qualitative(smoke_config: RunConfig, smoke_prepared, tmp_path):
    from worker.generation.evaluate import evaluate
    from worker.generation.qualitative import qualitative
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    siglip = train_siglip(_run(smoke_config, tmp_path / "train"), MemoryRecorder()).artifacts["best_checkpoint"]
    copy = tmp_path / "biogpt-copy"
    shutil.copytree(base_dir(smoke_config, "biogpt"), copy)
    model = smoke_config.model.model_copy(update={"biogpt": str(copy), "build_tiny_fixtures": False})
    config = smoke_config.model_copy(update={"model": model})
    short = _run(config, tmp_path / "full").model_copy(
        update={"generation": config.generation.model_copy(update={"epochs": 1})}
    )
    full = train_full(short, MemoryRecorder(), siglip_checkpoint=siglip).artifacts["best_checkpoint"]
    recorded = _recorded(full)["biogpt_revision"]
    assert recorded == weights_digest(copy)
    _perturb(copy / "model.safetensors")
    for stage in (evaluate, qualitative):
        with pytest.raises(BaseMismatch) as refused:
            stage(_run(config, tmp_path / stage.__name__), MemoryRecorder(), checkpoint=full)
        message = str(refused.value)
        assert "\n" not in message and "model.biogpt" in message and recorded in message, message
        assert weights_digest(copy) in message
