"""The training callbacks' state across a resume (worker/training/callbacks.py), without training."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from worker.recorder import MemoryRecorder
from worker.training.callbacks import BestCheckpoint, RecorderCallback, ThroughputCallback


def _best_checkpoint(dirpath: Path) -> BestCheckpoint:
    reporting = RecorderCallback(MemoryRecorder(), dirpath / "last.ckpt", cost=dict)
    return BestCheckpoint(
        reporting, dirpath=dirpath, filename="best-{epoch:02d}", monitor="val_loss", mode="min", save_top_k=1
    )


def test_a_resume_in_another_folder_keeps_the_best_score_and_names_the_files_there(tmp_path: Path) -> None:
    first, moved = tmp_path / "host-a" / "checkpoints", tmp_path / "host-b" / "checkpoints"
    saved = _best_checkpoint(first)
    best = str(first / "best-epoch=03.ckpt")
    saved.best_model_path, saved.best_model_score = best, torch.tensor(0.25)
    saved.best_k_models, saved.kth_best_model_path = {best: torch.tensor(0.25)}, best
    saved.kth_value = torch.tensor(0.25)

    resumed = _best_checkpoint(moved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning warns "The dirpath has changed" when it drops the state
        resumed.load_state_dict(saved.state_dict())
    assert resumed.best_model_score == pytest.approx(0.25)  # a later epoch must beat 0.25 to become best
    assert resumed.best_model_path == str(moved / "best-epoch=03.ckpt")
    assert list(resumed.best_k_models) == [str(moved / "best-epoch=03.ckpt")]
    assert resumed.kth_best_model_path == str(moved / "best-epoch=03.ckpt") and resumed.kth_value == 0.25


def test_a_resumed_run_counts_time_and_samples_over_its_attempts_and_keeps_the_highest_peak() -> None:
    class Peaks:
        def __init__(self, ram: float) -> None:
            self.ram = ram

        def metrics(self) -> dict[str, float | None]:
            return {"peak_ram_mb": self.ram, "peak_gpu_mem_mb": None}

    first = ThroughputCallback(Peaks(800.0))
    first.train_seconds, first.samples = 10.0, 500
    resumed = ThroughputCallback(Peaks(300.0))
    resumed.load_state_dict(first.state_dict())
    resumed.train_seconds += 5.0  # the second attempt's epochs
    resumed.samples += 250
    cost = resumed.cost()
    assert cost["samples_per_s"] == pytest.approx(750 / 15.0)
    assert cost["peak_ram_mb"] == 800.0 and cost["peak_gpu_mem_mb"] is None
    assert cost["train_time_s"] >= 0.0
    resumed.load_state_dict({**first.state_dict(), "elapsed_s": 42.0})
    assert resumed.cost()["train_time_s"] == pytest.approx(42.0)  # before its fit starts: the earlier attempts'
