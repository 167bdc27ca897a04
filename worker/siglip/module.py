"""The LightningModule: contrastive fine-tuning of a PEFT-wrapped SigLIP."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import SiglipModel

from worker.checkpoint_info import LORA_TARGETS_KEY, RUN_CONFIG_KEY
from worker.config import RunConfig
from worker.data.identity import DATA_IDENTITY_KEY
from worker.siglip.losses import infonce_loss, sigmoid_loss
from worker.siglip.model import LOGIT_PARAMS, trainable_parameter_names
from worker.siglip.retrieval import hits_at_1, retrieval_metrics
from worker.training.callbacks import METRICS_KEY, logged_metrics
from worker.training.schedule import warmup_cosine_schedule

# Per-image validation hits by epoch and the base model's retrieval, in every checkpoint (plain lists and
# numbers): a resumed run's report pairs images as an uninterrupted run's does.
VAL_HITS_KEY = "val_hits"


@dataclass(frozen=True)
class ValRetrieval:
    """Retrieval over the validation split: the metrics, the split indices scored, and their per-image hits@1."""

    metrics: dict[str, float]
    indices: list[int]
    hits: dict[str, list[float]]


class SiglipContrastiveModule(L.LightningModule):
    """Trains the adapters (and, for the sigmoid loss, the logit scale and bias) on image/report pairs.

    Checkpoints hold only the trainable parameters, the RunConfig and the adapted module names, so
    ``worker.siglip.checkpoint.load_finetuned_siglip`` can rebuild the model from the base weights.
    """

    def __init__(self, config: RunConfig, model: PeftModel, lora_targets: list[str], val_texts: list[str]):
        super().__init__()
        self.config = config
        self.model = model.train()  # from_pretrained returns eval mode, and Lightning keeps submodule modes
        self.lora_targets = lora_targets
        self.val_texts = val_texts
        self.strict_loading = False  # resuming loads only the trainable parameters
        # The data it trains on (worker/data/identity.py); the stage sets it, a bare module records none.
        self.data_identity: dict[str, Any] | None = None
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_hits: dict[int, tuple[list[int], dict[str, list[float]]]] = {}  # epoch -> (val indices, hits)
        self.base_retrieval: ValRetrieval | None = None  # the un-adapted model's, scored before training
        self._encode = torch.compile(self.encode) if config.train.compile else self.encode

    @property
    def siglip(self) -> SiglipModel:
        return self.model.get_base_model()

    def encode(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised fp32 image and text embeddings (LoRA layers sit inside the base model)."""
        image = self.siglip.vision_model(pixel_values=pixel_values).pooler_output
        text = self.siglip.text_model(input_ids=input_ids).pooler_output
        return F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, text = self._encode(batch["pixel_values"], batch["input_ids"])
        positives = batch["text_id"][:, None] == batch["text_id"][None, :]
        if self.config.train.loss == "sigmoid":
            loss = sigmoid_loss(image, text, self.siglip.logit_scale, self.siglip.logit_bias, positives)
        else:
            loss = infonce_loss(image, text, self.config.train.infonce_temperature, positives)
        return loss, image, text

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["index"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, image, text = self._step(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(batch["index"]))
        self._val_batches.append((batch["index"], image.detach(), text.detach()))

    def on_validation_epoch_end(self) -> None:
        """Retrieval over the whole validation split (gathered from every rank)."""
        if not self._val_batches:
            return
        scored = self._retrieval(self._val_batches, gather=True)
        self.log_dict(scored.metrics, on_epoch=True)
        # Per validation image, for intervals over images; the sanity check's epoch 0 is overwritten by the real one.
        self.val_hits[self.current_epoch] = (scored.indices, scored.hits)
        self._val_batches = []

    def on_train_start(self) -> None:
        """The zero-shot reference: the base model (adapters off) on the same validation images and texts,
        before the first optimizer step, so the report can say what fine-tuning changed. A fit without
        validation data (the training-step benchmark) has nothing to score it on."""
        if self.trainer.datamodule is None or not self.trainer.limit_val_batches:
            return
        if self.base_retrieval is None:  # scored already when resumed from a checkpoint that holds it
            self.base_retrieval = self.score_base_model()

    @torch.no_grad()
    def score_base_model(self) -> ValRetrieval:
        """Retrieval of the un-adapted model over the whole validation split. Every rank reads the whole split
        through the datamodule's own loader (no distributed sampler): nothing to gather."""
        datamodule = self.trainer.datamodule
        was_training = self.model.training
        self.model.eval()
        batches = []
        with self.model.disable_adapter(), self.trainer.precision_plugin.forward_context():
            for batch in datamodule.val_dataloader():
                batch = {k: v.to(self.device) for k, v in batch.items()}
                batch = datamodule.model_inputs(batch, augment_images=False)
                image, text = self.encode(batch["pixel_values"], batch["input_ids"])
                batches.append((batch["index"], image, text))
        self.model.train(was_training)
        return self._retrieval(batches, gather=False)

    def _retrieval(
        self, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], *, gather: bool
    ) -> ValRetrieval:
        index = torch.cat([b[0] for b in batches])
        image = torch.cat([b[1] for b in batches])
        text = torch.cat([b[2] for b in batches])
        if gather and self.trainer.world_size > 1:
            index, image, text = (t.flatten(0, 1) for t in self.all_gather((index, image, text)))
        # The distributed sampler pads with repeated items; keep each index once, in split order.
        unique, first = _first_occurrence(index)
        texts = [self.val_texts[i] for i in unique]
        image, text = image[first].cpu(), text[first].cpu()
        return ValRetrieval(retrieval_metrics(image, text, texts), unique, hits_at_1(image, text, texts))

    def configure_optimizers(self) -> dict[str, Any]:
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        no_decay = [p for n, p in named if n.endswith(LOGIT_PARAMS)]
        decay = [p for n, p in named if not n.endswith(LOGIT_PARAMS)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "name": "adapters"}, {"params": no_decay, "weight_decay": 0.0, "name": "logit"}],
            lr=self.config.train.lr,
            weight_decay=self.config.train.weight_decay,
        )
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine_schedule(optimizer, self.config.train.warmup_steps, total)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable tensors (adapters, logit scale/bias) plus what rebuilding the model needs."""
        keep = set(trainable_parameter_names(self))
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[RUN_CONFIG_KEY] = self.config.to_dict()
        checkpoint[LORA_TARGETS_KEY] = list(self.lora_targets)
        if self.data_identity is not None:
            checkpoint[DATA_IDENTITY_KEY] = self.data_identity
        checkpoint[METRICS_KEY] = logged_metrics(self._trainer)  # None outside a Trainer
        checkpoint[VAL_HITS_KEY] = {
            "epochs": {str(epoch): {"indices": list(indices), "hits": hits} for epoch, (indices, hits) in
                       self.val_hits.items()},
            "base": asdict(self.base_retrieval) if self.base_retrieval is not None else None,
        }  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(VAL_HITS_KEY) or {}
        self.val_hits = {int(epoch): (v["indices"], v["hits"]) for epoch, v in (saved.get("epochs") or {}).items()}
        base = saved.get("base")
        self.base_retrieval = ValRetrieval(**base) if base else None


def _first_occurrence(index: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Sorted unique values of ``index`` and the position of each one's first occurrence."""
    positions: dict[int, int] = {}
    for position, value in enumerate(index.tolist()):
        positions.setdefault(value, position)
    unique = sorted(positions)
    return unique, torch.tensor([positions[v] for v in unique], device=index.device)
