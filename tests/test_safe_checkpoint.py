"""No loader a user or a job row can reach runs code from a checkpoint file.

The payload is a checkpoint-shaped file whose pickle, when unpickled in full, creates a file. Every stage that
reads a named checkpoint (evaluate, qualitative, predict, export, train-full's SigLIP input, a resumed run's
last checkpoint) must refuse it in one line, and the file must not exist afterwards.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from worker.config import RunConfig
from worker.recorder import MemoryRecorder
from worker.safe_checkpoint import UnsafeCheckpoint, load_checkpoint

pytestmark = pytest.mark.slow


class _CreatesAFile:
    """Unpickled in full, it runs ``exec`` and creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _payload(path: Path, marker: Path, config: RunConfig, *, report: bool) -> Path:
    """A checkpoint with every key our loaders look for, plus the payload."""
    header = {"run_config": config.to_dict(), "lora_targets": [], "state_dict": {}, "payload": _CreatesAFile(marker)}
    if report:
        header |= {"siglip_checkpoint": str(path), "feature_dim": 8, "biogpt_fingerprint": 1.0}
    torch.save(header, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "created-by-the-payload"


def test_the_payload_is_live_when_unpickled_in_full(tmp_path: Path, marker: Path, smoke_config: RunConfig):
    path = _payload(tmp_path / "evil.ckpt", marker, smoke_config, report=True)
    torch.load(path, weights_only=False)
    assert marker.exists()  # so its absence below means the loaders refused it


def test_the_safe_loader_refuses_it_in_one_line(tmp_path: Path, marker: Path, smoke_config: RunConfig):
    path = _payload(tmp_path / "evil.ckpt", marker, smoke_config, report=False)
    with pytest.raises(UnsafeCheckpoint) as refused:
        load_checkpoint(path, "checkpoint")
    message = str(refused.value)
    assert "\n" not in message and "refused" in message and "GLOBAL exec" in message and str(path) in message
    assert not marker.exists()


def _image(tmp_path: Path) -> str:
    path = tmp_path / "xray.png"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(path)
    return str(path)


STAGES = {
    "evaluate": ("worker.generation.evaluate:evaluate", True, lambda tmp: {}),
    "qualitative": ("worker.generation.qualitative:qualitative", True, lambda tmp: {}),
    "predict (train-full)": ("worker.inference.stage:predict_images", True, lambda tmp: {"images": [_image(tmp)]}),
    "predict (train)": ("worker.inference.stage:predict_images", False, lambda tmp: {"images": [_image(tmp)]}),
    "export": ("worker.export.stage:export", False, lambda tmp: {}),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_that_reads_a_named_checkpoint_refuses_the_payload(
    stage: str, tmp_path: Path, marker: Path, smoke_config: RunConfig, smoke_prepared
):
    target, report, extra = STAGES[stage]
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    path = _payload(tmp_path / "evil.ckpt", marker, smoke_config, report=report)
    config = smoke_config.model_copy(update={"paths": smoke_config.paths.model_copy(update={"run_dir": str(tmp_path)})})
    with pytest.raises(UnsafeCheckpoint) as refused:
        function(config, MemoryRecorder(), checkpoint=str(path), **extra(tmp_path))
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)
    assert not marker.exists()


def test_train_full_refuses_the_payload_as_its_siglip_input(
    tmp_path: Path, marker: Path, smoke_config: RunConfig, smoke_prepared
):
    from worker.generation.stage import train_full

    path = _payload(tmp_path / "evil.ckpt", marker, smoke_config, report=False)
    config = smoke_config.model_copy(update={"paths": smoke_config.paths.model_copy(update={"run_dir": str(tmp_path)})})
    with pytest.raises(UnsafeCheckpoint, match="SigLIP checkpoint"):
        train_full(config, MemoryRecorder(), siglip_checkpoint=str(path))
    assert not marker.exists()


def test_a_resumed_run_refuses_the_payload_as_its_last_checkpoint(
    tmp_path: Path, marker: Path, smoke_config: RunConfig, smoke_prepared
):
    from worker.siglip.stage import checkpoint_dir, train_siglip

    config = smoke_config.model_copy(update={
        "paths": smoke_config.paths.model_copy(update={"run_dir": str(tmp_path / "run")}),
        "train": smoke_config.train.model_copy(update={"resume": True}),
    })  # fmt: skip
    last = checkpoint_dir(config) / "last.ckpt"
    last.parent.mkdir(parents=True)
    _payload(last, marker, smoke_config, report=False)
    with pytest.raises(UnsafeCheckpoint, match="resume checkpoint"):
        train_siglip(config, MemoryRecorder())
    assert not marker.exists()
