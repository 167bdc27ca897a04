"""The Lightning Trainer both training stages use (SigLIP `train` and report-generation `train-full`).

One place for what every run gets: the best checkpoint and a last checkpoint written after every epoch
(atomically, so a worker killed at any moment leaves one to resume from at the next epoch), early stopping
on val_loss, LR monitoring, per-epoch reporting to the recorder with cooperative cancel, and
throughput/memory accounting.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

from worker.config import RunConfig
from worker.recorder import Recorder
from worker.result import StageResult
from worker.safe_checkpoint import load_checkpoint
from worker.tracking import build_loggers
from worker.training.atomic_io import AtomicCheckpointIO
from worker.training.callbacks import BestCheckpoint, RecorderCallback, ThroughputCallback
from worker.training.epoch_log import EpochLog
from worker.training.profiling import PeakMemory


@dataclass
class RunCallbacks:
    """The callbacks a stage reads its results from after `fit`."""

    checkpointing: BestCheckpoint
    throughput: ThroughputCallback
    reporting: RecorderCallback


def build_trainer(
    config: RunConfig,
    recorder: Recorder,
    peak: PeakMemory,
    *,
    ckpt_dir: Path,
    accelerator: str,
    precision: str,
    max_epochs: int,
) -> tuple[L.Trainer, RunCallbacks]:
    """A Trainer writing `best-*.ckpt` and, after every epoch and on cancel, `last.ckpt` under ckpt_dir."""
    throughput = ThroughputCallback(peak)
    # Best only: ModelCheckpoint's save_last rewrites last.ckpt only when the monitored value improves, so a
    # run resumed from it would redo the epochs after the best one. RecorderCallback writes last.ckpt.
    reporting = RecorderCallback(recorder, last_checkpoint=ckpt_dir / "last.ckpt", cost=throughput.cost)
    callbacks = RunCallbacks(
        checkpointing=BestCheckpoint(
            reporting, dirpath=ckpt_dir, filename="best-{epoch:02d}", monitor="val_loss", mode="min", save_top_k=1
        ),
        throughput=throughput,
        reporting=reporting,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=config.train.devices,
        strategy="ddp" if config.train.devices > 1 else "auto",
        precision=precision,
        plugins=[AtomicCheckpointIO()],
        max_epochs=max_epochs,
        max_time=timedelta(seconds=config.train.max_time_s),
        limit_train_batches=config.train.limit_train_batches,
        num_sanity_val_steps=0,
        logger=build_loggers(config, ckpt_dir.parent, run_name=ckpt_dir.parent.name),
        callbacks=[
            callbacks.checkpointing,
            EarlyStopping(monitor="val_loss", mode="min", patience=config.train.early_stopping_patience),
            LearningRateMonitor(logging_interval="epoch"),
            callbacks.reporting,
            callbacks.throughput,
            EpochLog(),
        ],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=1,  # metrics are per epoch; this only silences the "fewer batches" warning
    )
    for logger in trainer.loggers:
        # The whole config, flattened (train/lr, peft/r...): every logger's view of the run's parameters.
        logger.log_hyperparams(config.to_dict())
    return trainer, callbacks


def resume_checkpoint(config: RunConfig, ckpt_dir: Path) -> Path | None:
    """The run's last checkpoint when the config asks to resume and one exists. The folder can be shared (a
    bucket, another host's takeover), so the file is read weights-only first: one that needs more is refused
    in one line here, before Lightning (also told weights_only) sees it."""
    last = ckpt_dir / "last.ckpt"
    if not (config.train.resume and last.is_file()):
        return None
    load_checkpoint(last, "resume checkpoint")
    return last


def pinned_base(config: RunConfig, resume_from: Path | None, field: str) -> RunConfig:
    """``config`` with the base it trains on pinned (worker/base_models.py), so its checkpoints record it. A
    resumed run continues on the base its last checkpoint recorded, and is refused if that base changed.
    Call it after naming the run folder: the folder hangs on the config hash, which pinning changes."""
    from worker.base_models import pin_base
    from worker.checkpoint_info import recorded_config

    key = f"{field}_revision"
    recorded = (recorded_config(resume_from) or {}).get("model", {}).get(key) if resume_from else None
    if recorded and not getattr(config.model, key):
        config = config.model_copy(update={"model": config.model.model_copy(update={key: recorded})})
    return pin_base(config, field, resume_from and f"checkpoint {resume_from}")


def best_epoch_metrics(epochs: list[dict[str, float]]) -> dict[str, float]:
    """The metrics of the epoch with the lowest val_loss (the one the best checkpoint holds)."""
    with_val = [m for m in epochs if "val_loss" in m]
    best = min(with_val, key=lambda m: m["val_loss"]) if with_val else (epochs[-1] if epochs else {})
    return {k: v for k, v in best.items() if not k.startswith("lr-")}


def fit_result(stage: str, callbacks: RunCallbacks, ckpt_dir: Path, metrics: dict[str, Any]) -> StageResult:
    """A fit's StageResult: its checkpoints as artifacts, and cancelled when the user stopped it."""
    artifacts = {"checkpoint_dir": str(ckpt_dir)}
    if callbacks.checkpointing.best_model_path:
        artifacts["best_checkpoint"] = callbacks.checkpointing.best_model_path
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        artifacts["last_checkpoint"] = str(last)
    status = "cancelled" if callbacks.reporting.cancelled else "succeeded"
    return StageResult(stage=stage, metrics=metrics, artifacts=artifacts, status=status)
