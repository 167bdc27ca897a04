"""The `train-full` stage: frozen fine-tuned SigLIP -> projector -> BioGPT, trained with teacher forcing.

The vision tower is frozen, so its features are computed once per split before training (no image
augmentation: the same image always gives the same prefix), kept in a file that the epochs read a batch at a
time (worker/generation/features.py), and the epochs only run BioGPT.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from transformers import AutoTokenizer

from worker.base_models import base_source
from worker.checkpoint_info import read_header
from worker.config import GenerationConfig, RunConfig
from worker.data.identity import data_identity, trained_data, with_data
from worker.export.stage import write_run_outputs
from worker.generation.datamodule import ReportDataModule, ReportDataset, TargetCollator, encode_targets
from worker.generation.encoder import load_siglip
from worker.generation.features import (
    FeatureRows,
    features_key,
    features_path,
    file_digest,
    load_or_write_features,
)
from worker.generation.model import ReportCaptioner, build_captioner
from worker.generation.module import ReportGenModule
from worker.generation.studies import Studies, select_studies
from worker.inputs import name_of
from worker.recorder import Recorder
from worker.result import StageResult
from worker.siglip.model import count_parameters
from worker.training.device import resolve_accelerator, resolve_precision, torch_device, weights_dtype_for
from worker.training.profiling import PeakMemory
from worker.training.runs import short_hash
from worker.training.trainer import (
    best_epoch_metrics,
    build_trainer,
    fit_result,
    pinned_base,
    resume_checkpoint,
)

if TYPE_CHECKING:
    from worker.data import PreparedData, SplitData

STAGE = "train-full"


def checkpoint_dir(config: RunConfig, siglip_checkpoint: str) -> Path:
    """One folder per config and SigLIP checkpoint (the config hash does not see the checkpoint)."""
    same_run = config.model_copy(update={"train": config.train.model_copy(update={"resume": False})})
    # Hashed by its recorded name (worker/inputs.py), so a takeover on another host finds the same folder.
    recorded = name_of(str(Path(siglip_checkpoint).resolve()))
    return same_run.run_path(STAGE) / f"checkpoints-{short_hash(recorded)}"


def train_full(config: RunConfig, recorder: Recorder, *, siglip_checkpoint: str) -> StageResult:
    """Stage entry point: prepare (or reuse) the data, encode the images, train the report generator."""
    from worker.data import load_prepared

    if not Path(siglip_checkpoint).is_file():
        raise FileNotFoundError(f"SigLIP checkpoint {siglip_checkpoint} does not exist; pass the best_checkpoint "
                                "that `jobs run train` returned")
    # The generator trains on its SigLIP's dataset and split: a study that adapted the image features is never
    # in the generator's validation or test split. The section it writes (data.target) is its own: the split
    # is drawn over every study with a report, whichever section, so it is the same split.
    siglip_data = trained_data(read_header(siglip_checkpoint))
    own_target = {"target": config.data.target}
    config = with_data(config, siglip_data.data | own_target, f"SigLIP checkpoint {siglip_checkpoint}")
    prepared = load_prepared(config)
    train_uids = set(prepared.split("train").uids) | set(siglip_data.train_uids or ())
    identity = data_identity(config, prepared.root, train_uids)
    L.seed_everything(config.seed, workers=True)
    accelerator = resolve_accelerator(config.train)
    precision = resolve_precision(config.train, accelerator)
    device = torch_device(accelerator)
    gen = config.generation
    ckpt_dir = checkpoint_dir(config, siglip_checkpoint)
    resume_from = resume_checkpoint(config, ckpt_dir)
    config = pinned_base(config, resume_from, "biogpt")

    with PeakMemory() as peak:
        started = time.perf_counter()
        splits = {name: prepared.split(name) for name in ("train", "val")}
        studies = {name: select_studies(split) for name, split in splits.items()}
        features = split_features(prepared, splits, studies, siglip_checkpoint, gen, device)
        feature_time = time.perf_counter() - started

        base, pinned = base_source(config, "biogpt")
        tokenizer = AutoTokenizer.from_pretrained(base, **pinned)
        compute_dtype = weights_dtype_for(precision)
        feature_dim = features["train"].shape[-1]
        captioner = build_captioner(config, tokenizer, feature_dim, compute_dtype=compute_dtype, device=device)
        captioner.projector.fit_normalization(features["train"].chunks())
        eos = captioner.eos_id
        datasets = {
            name: ReportDataset(features[name], encode_targets(tokenizer, group.texts, gen.max_target_tokens, eos))
            for name, group in studies.items()
        }
        collate = TargetCollator(captioner.pad_id, len(captioner.start_ids))
        datamodule = ReportDataModule(datasets["train"], datasets["val"], collate, gen.batch_size)
        initial_val_loss = mean_loss(captioner, datamodule.val_dataloader(), device)
        module = ReportGenModule(config, captioner, name_of(str(Path(siglip_checkpoint).resolve())), feature_dim)
        module.data_identity = identity
        trainer, callbacks = build_trainer(
            config, recorder, peak, ckpt_dir=ckpt_dir, accelerator=accelerator, precision=precision,
            max_epochs=gen.epochs,
        )  # fmt: skip
        checkpointing, throughput, reporting = callbacks.checkpointing, callbacks.throughput, callbacks.reporting
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)

    trainable, total = count_parameters(captioner)
    metrics: dict[str, Any] = {
        **best_epoch_metrics(reporting.epoch_metrics),
        "initial_val_loss": initial_val_loss,
        "feature_time_s": feature_time,
        **throughput.cost(),  # time and peak memory over every attempt of a resumed run
        "trainable_params": trainable,
        "total_params": total,
        "epochs_run": trainer.current_epoch,
        "best_val_loss": None if checkpointing.best_model_score is None else float(checkpointing.best_model_score),
        "best_checkpoint": checkpointing.best_model_path or None,
        "train_studies": len(studies["train"]),
        "val_studies": len(studies["val"]),
        "precision": precision,
    }
    return write_run_outputs(trainer, fit_result(STAGE, callbacks, ckpt_dir, metrics), ckpt_dir)


def split_features(
    prepared: PreparedData, splits: dict[str, SplitData], studies: dict[str, Studies], siglip_checkpoint: str,
    gen: GenerationConfig, device: str,
) -> dict[str, FeatureRows]:
    """Each split's study features, from its file in the prepared data's folder (worker/generation/features.py)
    or computed into it.

    SigLIP is loaded even when every file is there: loading it draws from the seeded random generator, and the
    projector's and adapters' initialisation that follows must not depend on whether the features were
    computed or read (a resumed or repeated run starts from the same weights as the first)."""
    folder = Path(prepared.artifacts["prepared_dir"]) / "features"
    checkpoint_sha256 = file_digest(siglip_checkpoint)
    siglip = load_siglip(siglip_checkpoint, device)
    features = {}
    for name, split in splits.items():
        group = studies[name]
        cache = Path(prepared.artifacts[f"cache_{name}"]).name
        filenames = [split.filenames[row] for row in group.rows]
        key = features_key(checkpoint_sha256, cache, filenames, gen, torch.device(device).type)
        features[name] = load_or_write_features(
            features_path(folder, name, key), group.images(split), gen, lambda: siglip, f"{name} image features"
        )
    return features


@torch.no_grad()
def mean_loss(captioner: ReportCaptioner, loader, device: str) -> float:
    """Validation loss of the untrained model: the baseline that training must lower."""
    was_training = captioner.training
    captioner.eval()
    total = count = 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = len(batch["index"])
        total += float(captioner(batch["features"], batch["input_ids"], batch["attention_mask"], batch["labels"])) * n
        count += n
    captioner.train(was_training)
    return total / count
