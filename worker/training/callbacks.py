"""Callbacks that connect training to the outside: the recorder (progress, metrics, cancellation)
and throughput timing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from worker.recorder import Recorder
from worker.training.profiling import PeakMemory

METRICS_KEY = "metrics"
"""Where a checkpoint keeps the metrics logged when it was saved (``logged_metrics``); its model card shows them."""


class RecorderCallback(L.Callback):
    """Reports progress every step; at each epoch's end, once the best checkpoint is settled, writes
    ``last_checkpoint`` and then records the epoch's metrics (rank 0 only); stops the run, after saving
    ``last_checkpoint``, once any rank's recorder says the user cancelled.

    Checkpoint first, metrics second, with the epoch's metrics inside the checkpoint: a run killed between
    the two resumes at the next epoch and records what the checkpoint holds, so no finished epoch is
    trained twice and none is missing from the metrics. BestCheckpoint calls `finish_epoch`, after it has
    saved the epoch's best (Lightning runs checkpoint callbacks last), so last.ckpt names the current best."""

    def __init__(self, recorder: Recorder, last_checkpoint: Path, cost: Callable[[], dict[str, float | None]]):
        self.recorder = recorder
        self.last_checkpoint = last_checkpoint
        self.cost = cost  # time, throughput and peak memory so far, added to each epoch's metrics
        self.cancelled = False
        self.epoch_metrics: list[dict[str, float]] = []
        self._unrecorded: dict[str, Any] | None = None  # {"epoch", "metrics"} not recorded yet

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_metrics": self.epoch_metrics, "unrecorded": self._unrecorded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_metrics = list(state_dict.get("epoch_metrics", []))
        self._unrecorded = state_dict.get("unrecorded")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._unrecorded is not None:  # resumed from a checkpoint whose epoch may not have been recorded
            self._record(trainer, self._unrecorded["epoch"], self._unrecorded["metrics"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.is_global_zero:
            total = int(trainer.estimated_stepping_batches)
            self.recorder.progress(epoch=trainer.current_epoch, step=trainer.global_step, total=total)
        # Every rank must take the same decision, or the others wait forever in the next collective.
        asked = trainer.strategy.reduce_boolean_decision(self.recorder.cancelled(), all=False)
        if asked and not self.cancelled:
            self.cancelled = True
            self._save_last(trainer)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = logged_metrics(trainer)
        metrics.update({name: value for name, value in self.cost().items() if value is not None})
        self.epoch_metrics.append(metrics)
        if self.cancelled:  # stopped mid-epoch: its checkpoint was saved at that step
            self._record(trainer, trainer.current_epoch, metrics)
        else:
            self._unrecorded = {"epoch": trainer.current_epoch, "metrics": metrics}

    def finish_epoch(self, trainer: L.Trainer) -> None:
        """last.ckpt (carrying the epoch's metrics), then the metrics themselves."""
        if self._unrecorded is None:
            return
        self._save_last(trainer)
        self._record(trainer, self._unrecorded["epoch"], self._unrecorded["metrics"])

    def _save_last(self, trainer: L.Trainer) -> None:
        # A run that lost its job (JobLost) must not overwrite the new owner's last.ckpt.
        if trainer.is_global_zero:
            self.recorder.ensure_owner()
        trainer.save_checkpoint(self.last_checkpoint)

    def _record(self, trainer: L.Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if trainer.is_global_zero:
            for split in ("train", "val"):
                values = {k: v for k, v in metrics.items() if _split_of(k) == split}
                if values:
                    self.recorder.log_metrics(values, split=split, epoch=epoch)
        self._unrecorded = None


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint; at each epoch's end it then lets `reporting` write last.ckpt and record the
    epoch, and only after that removes the best file it superseded. (Lightning removes it as soon as a
    better one is saved: a run killed before last.ckpt named the new one resumed with a best that was gone.)"""

    def __init__(self, reporting: RecorderCallback, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reporting = reporting
        self._superseded: list[str] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_owner(trainer)  # where Lightning saves a new best after a validation
        super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_owner(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self.reporting.finish_epoch(trainer)
        for filepath in self._superseded:
            super()._remove_checkpoint(trainer, filepath)
        self._superseded.clear()

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._superseded.append(filepath)

    def _ensure_owner(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:  # a run that lost its job saves no new best
            self.reporting.recorder.ensure_owner()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, but the best score, top-k and paths survive a run folder that moved (a takeover on
        another host mirrors the bucket under its own folder): Lightning keeps only `best_model_path` when the
        folder differs, and the first epoch after such a resume became "best" whatever its loss."""
        super().load_state_dict(_moved_to(state_dict, self.dirpath))


def _moved_to(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """ModelCheckpoint's state with the files it names moved from the checkpoint's folder into `dirpath`."""
    old = state.get("dirpath")
    if dirpath is None or old is None or old == dirpath:
        return state

    def moved(path: Any) -> Any:
        return str(Path(dirpath) / Path(path).name) if isinstance(path, str) and path else path

    return {
        **state,
        "dirpath": dirpath,
        "best_model_path": moved(state.get("best_model_path")),
        "kth_best_model_path": moved(state.get("kth_best_model_path")),
        "last_model_path": moved(state.get("last_model_path")),
        "best_k_models": {moved(path): score for path, score in (state.get("best_k_models") or {}).items()},
    }


def logged_metrics(trainer: L.Trainer | None) -> dict[str, float]:
    """The finite scalar metrics logged so far this epoch (a checkpoint keeps them for its model card); none
    for a module saved outside a Trainer."""
    if trainer is None:
        return {}
    values = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
    return {name: value for name, value in values.items() if math.isfinite(value)}


def _split_of(metric: str) -> str:
    """Retrieval and val_loss go under "val"; losses, learning rates and costs of training under "train"."""
    return "val" if metric.startswith(("val_", "i2t_", "t2i_", "pos_", "neg_")) else "train"


class ThroughputCallback(L.Callback):
    """Time spent in training epochs (validation excluded) and the samples they held, summed over ranks; and
    the run's wall time and peak memory. Kept in the checkpoint, so a resumed run reports the sums over its
    attempts (the work a resume redoes, after the checkpoint, is not counted twice) and the highest peaks."""

    def __init__(self, peak: PeakMemory | None = None):
        self.peak = peak
        self.train_seconds = 0.0
        self.samples = 0
        self._earlier_elapsed_s = 0.0  # wall time of the attempts before this one, up to their checkpoint
        self._earlier_peaks: dict[str, float] = {}
        self._epoch_start: float | None = None
        self._fit_start: float | None = None
        self._fit_end: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_seconds": self.train_seconds,
            "samples": self.samples,
            "elapsed_s": self.elapsed_s,
            "peaks": self.peaks(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.samples = int(state_dict.get("samples", 0))
        self._earlier_elapsed_s = float(state_dict.get("elapsed_s", 0.0))
        self._earlier_peaks = dict(state_dict.get("peaks") or {})

    def peaks(self) -> dict[str, float | None]:
        """Peak memory so far, the highest over this attempt and the earlier ones."""
        now = self.peak.metrics() if self.peak is not None else {}
        names = set(now) | set(self._earlier_peaks)
        return {name: _highest(now.get(name), self._earlier_peaks.get(name)) for name in sorted(names)}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_end = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Wall time of fit so far, validation included, over every attempt."""
        if self._fit_start is None:
            return self._earlier_elapsed_s
        return self._earlier_elapsed_s + (self._fit_end or time.perf_counter()) - self._fit_start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.samples += len(batch["index"]) * trainer.world_size

    def _close_phase(self) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start
            self._epoch_start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_phase()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_phase()  # an epoch stopped before its validation (cancelled)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    def cost(self) -> dict[str, float | None]:
        return {"train_time_s": self.elapsed_s, "samples_per_s": self.samples_per_s, **self.peaks()}


def _highest(*values: float | None) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None
