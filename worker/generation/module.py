"""The LightningModule: teacher-forced training of the projector and BioGPT's adapters (or all of it)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from worker.checkpoint_info import RUN_CONFIG_KEY, SIGLIP_CHECKPOINT_KEY
from worker.config import RunConfig
from worker.data.identity import DATA_IDENTITY_KEY
from worker.generation.model import ReportCaptioner
from worker.siglip.model import trainable_parameter_names
from worker.training.callbacks import METRICS_KEY, logged_metrics
from worker.training.schedule import warmup_cosine_schedule

FEATURE_DIM_KEY = "feature_dim"
BASE_FINGERPRINT_KEY = "biogpt_fingerprint"
PROJECTOR = "captioner.projector."


def base_fingerprint(captioner: ReportCaptioner) -> float:
    """A cheap signature of the frozen BioGPT token embeddings: adapters only fit the base they were trained on."""
    return float(captioner.causal_lm.get_input_embeddings().weight.detach().float().abs().sum())


class ReportGenModule(L.LightningModule):
    """Checkpoints hold only the trainable tensors plus what rebuilding needs (config, SigLIP checkpoint,
    feature width, base-model fingerprint); ``worker.generation.checkpoint`` loads them back."""

    def __init__(self, config: RunConfig, captioner: ReportCaptioner, siglip_checkpoint: str, feature_dim: int):
        super().__init__()
        self.config = config
        # from_pretrained returns BioGPT in eval mode and Lightning keeps submodule modes as it finds them:
        # without this, training would run with dropout off.
        self.captioner = captioner.train()
        self.siglip_checkpoint = siglip_checkpoint
        self.feature_dim = feature_dim
        self.fingerprint = base_fingerprint(captioner)
        self.strict_loading = False  # resuming loads only the trainable parameters
        # The data it trains on (worker/data/identity.py); the stage sets it, a bare module records none.
        self.data_identity: dict[str, Any] | None = None

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.captioner(batch["features"], batch["input_ids"], batch["attention_mask"], batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["index"]))  # fmt: skip
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        # Averaged over every rank's share of the validation set: the best checkpoint and best_val_loss are
        # the whole set's, not rank 0's.
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(batch["index"]))

    def configure_optimizers(self) -> dict[str, Any]:
        gen = self.config.generation
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=gen.lr, weight_decay=self.config.train.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": warmup_cosine_schedule(optimizer, gen.warmup_steps, total)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The projector is saved whole: its feature statistics are buffers, not parameters.
        keep = set(trainable_parameter_names(self)) | {k for k in checkpoint["state_dict"] if k.startswith(PROJECTOR)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[RUN_CONFIG_KEY] = self.config.to_dict()
        checkpoint[SIGLIP_CHECKPOINT_KEY] = self.siglip_checkpoint
        checkpoint[FEATURE_DIM_KEY] = self.feature_dim
        checkpoint[BASE_FINGERPRINT_KEY] = self.fingerprint
        if self.data_identity is not None:
            checkpoint[DATA_IDENTITY_KEY] = self.data_identity
        checkpoint[METRICS_KEY] = logged_metrics(self._trainer)  # None outside a Trainer
