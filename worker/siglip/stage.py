"""The `train` stage: fine-tune SigLIP with LoRA or QLoRA on the prepared image/report pairs.

Precision: ``train.precision=auto`` means bf16-mixed on a GPU that supports bf16, else 32-true. QLoRA uses
the same rule: under bf16-mixed its 4-bit layers compute in bf16 (``bnb_4bit_compute_dtype``) and its
frozen non-quantized weights are stored in bf16, while the LoRA adapters, logit scale/bias and the loss
stay fp32 (autocast bridges them). On the CPU everything is fp32.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import AutoImageProcessor, AutoTokenizer

from worker.base_models import base_source
from worker.config import RunConfig
from worker.export.stage import write_run_outputs
from worker.recorder import Recorder
from worker.result import StageResult
from worker.siglip.datamodule import PairSplit, SiglipDataModule, Splits
from worker.siglip.model import LoadPlan, build_peft_siglip, count_parameters, weight_memory_bytes
from worker.siglip.module import SiglipContrastiveModule
from worker.siglip.preprocess import ImageNormalizer
from worker.training.device import resolve_accelerator, resolve_precision, weights_dtype_for
from worker.training.profiling import MB, PeakMemory
from worker.training.trainer import (
    best_epoch_metrics,
    build_trainer,
    fit_result,
    pinned_base,
    resume_checkpoint,
)

STAGE = "train"


def train_siglip(config: RunConfig, recorder: Recorder) -> StageResult:
    """Stage entry point: prepare (or reuse) the data, then train. See ``run_training``."""
    from worker.data import load_prepared
    from worker.data.identity import data_identity

    prepared = load_prepared(config)
    identity = data_identity(config, prepared.root, prepared.split("train").uids)
    return run_training(config, recorder, prepared, data_identity=identity)


def checkpoint_dir(config: RunConfig) -> Path:
    """<run_path("train")>/checkpoints. The run path must not depend on train.resume, or a resumed run
    would look for its checkpoint in a different folder than the run it continues."""
    same_run = config.model_copy(update={"train": config.train.model_copy(update={"resume": False})})
    return same_run.run_path(STAGE) / "checkpoints"


def setup_training(
    config: RunConfig, splits: Splits, plan: LoadPlan
) -> tuple[SiglipContrastiveModule, SiglipDataModule]:
    """The PEFT model inside its LightningModule, and the datamodule with the model's preprocessing."""
    model = build_peft_siglip(config, plan)
    targets = sorted(model.peft_config["default"].target_modules)
    model_path, pinned = base_source(config, "siglip")
    tokenizer = AutoTokenizer.from_pretrained(model_path, **pinned)
    image_processor = AutoImageProcessor.from_pretrained(model_path, **pinned)
    normalizer = ImageNormalizer.for_model(image_processor, model.get_base_model().config.vision_config.image_size)
    datamodule = SiglipDataModule(config, splits, tokenizer, normalizer)
    module = SiglipContrastiveModule(config, model, targets, list(splits.split("val").texts))
    return module, datamodule


def run_training(
    config: RunConfig, recorder: Recorder, splits: Splits, *, data_identity: dict[str, Any] | None = None
) -> StageResult:
    """Train on ``splits`` (train and val) and return the run's metrics (losses and retrieval of the final best
    epoch, time, throughput, memory, parameter counts). ``data_identity`` (worker/data/identity.py) goes into
    every checkpoint, so what reads it later scores the same split."""
    L.seed_everything(config.seed, workers=True)
    accelerator = resolve_accelerator(config.train)
    precision = resolve_precision(config.train, accelerator)
    # Under DDP each process loads its own copy; a 4-bit model must be placed at load time.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    plan = LoadPlan(
        quantize=config.peft.method == "qlora",
        weights_dtype=weights_dtype_for(precision),
        device_map={"": local_rank if accelerator == "gpu" else "cpu"},
    )
    ckpt_dir = checkpoint_dir(config)
    resume_from = resume_checkpoint(config, ckpt_dir)
    config = pinned_base(config, resume_from, "siglip")

    with PeakMemory() as peak:
        module, datamodule = setup_training(config, splits, plan)
        module.data_identity = data_identity
        trainer, callbacks = build_trainer(
            config, recorder, peak, ckpt_dir=ckpt_dir, accelerator=accelerator, precision=precision,
            max_epochs=config.train.epochs,
        )  # fmt: skip
        checkpointing, throughput, reporting = callbacks.checkpointing, callbacks.throughput, callbacks.reporting
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)

    trainable, total = count_parameters(module.model)
    metrics: dict[str, Any] = {
        **best_epoch_metrics(reporting.epoch_metrics),
        **throughput.cost(),  # time and peak memory over every attempt of a resumed run
        "trainable_params": trainable,
        "total_params": total,
        "weight_memory_mb": weight_memory_bytes(module.model) / MB,
        "epochs_run": trainer.current_epoch,
        "best_val_loss": _as_float(checkpointing.best_model_score),
        "best_checkpoint": checkpointing.best_model_path or None,
        "resumed_from": str(resume_from) if resume_from else None,
        "precision": precision,
        **base_metrics(module),
    }
    result = fit_result(STAGE, callbacks, ckpt_dir, metrics)
    if trainer.is_global_zero:  # every rank holds the gathered hits; one writes them
        hits = write_val_hits(module, splits.split("val"), checkpointing.best_model_path, ckpt_dir.parent)
        if hits is not None:
            result.artifacts["val_hits"] = str(hits)
    return write_run_outputs(trainer, result, ckpt_dir)


BEST_EPOCH = re.compile(r"epoch=(\d+)")
BASE_PREFIX = "base_"  # the un-adapted model's retrieval: base_i2t_recall@1, and base_i2t_hit@1 per image


def base_metrics(module: SiglipContrastiveModule) -> dict[str, float]:
    """The base model's retrieval metrics, prefixed; the chance levels are left out (the fine-tuned run's are the
    same numbers). Empty when this process never started training (a run resumed after its last epoch)."""
    scored = module.base_retrieval
    if scored is None:
        return {}
    return {BASE_PREFIX + k: v for k, v in scored.metrics.items() if not k.endswith("_chance")}


def write_val_hits(module: SiglipContrastiveModule, val: PairSplit, best_checkpoint: str, out_dir: Path) -> Path | None:
    """One JSON line per validation image at the best checkpoint's epoch: its file, its study and its
    i2t/t2i hit@1 (their means are the recorded recall@1), and the base model's (base_i2t_hit@1 ...). None
    when this process did not validate that epoch (a run resumed after it)."""
    match = BEST_EPOCH.search(Path(best_checkpoint).name) if best_checkpoint else None
    epoch = int(match.group(1)) if match else max(module.val_hits, default=-1)
    if epoch not in module.val_hits:
        return None
    indices, hits = module.val_hits[epoch]
    # The image file names the item across runs (worker.data.SplitData has them); the row index otherwise.
    names = getattr(val, "filenames", None) or [str(i) for i in range(max(indices, default=-1) + 1)]
    base = module.base_retrieval
    base_row = {index: row for row, index in enumerate(base.indices)} if base else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "val-hits.jsonl"
    with path.open("w") as out:
        for row, index in enumerate(indices):
            record = {"image": names[index]} | {name: values[row] for name, values in hits.items()}
            if index in base_row:  # the same image under the base model: the report pairs the two
                record |= {BASE_PREFIX + name: values[base_row[index]] for name, values in base.hits.items()}
            out.write(json.dumps(record) + "\n")
    return path


def _as_float(value: torch.Tensor | None) -> float | None:
    return None if value is None else float(value)
