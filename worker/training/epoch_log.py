"""One log line per finished epoch, with its losses and key metric: what a user reads in `jobs logs`.

Lightning's own output is a progress bar (off when not on a terminal) and its epoch-end metrics are not
logged at all, so without this line a job's log says nothing about how training goes.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

# Shown in this order when the epoch recorded them; i2t_recall@1 is the SigLIP stage's retrieval metric.
SHOWN = ("train_loss", "val_loss", "i2t_recall@1", "t2i_recall@1")


def epoch_line(epoch: int, max_epochs: int, metrics: dict[str, float]) -> str:
    """`epoch 1 (2 of 5): train_loss 0.5120, val_loss 0.4981, i2t_recall@1 0.8000` (the metrics it has, in
    order). The epoch is numbered from 0, as Lightning and the metrics table number it."""
    values = ", ".join(f"{name} {metrics[name]:.4f}" for name in SHOWN if name in metrics)
    return f"epoch {epoch} ({epoch + 1} of {max_epochs}): {values or 'no metrics recorded'}"


class EpochLog(L.Callback):
    """Logs epoch_line after each training epoch (its validation included), on the first rank only."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name in SHOWN}
        log.info(epoch_line(trainer.current_epoch, trainer.max_epochs or 0, metrics))
