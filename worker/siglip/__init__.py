"""SigLIP fine-tuning with LoRA / QLoRA (the `train` stage).

Modules, one concern each:
- ``model``       load the base (full precision or 4-bit NF4), pick LoRA targets, wrap with PEFT
- ``losses``      pairwise sigmoid (SigLIP) and InfoNCE losses
- ``retrieval``   duplicate-aware recall@K, strict recall, chance levels, cosine summaries
- ``preprocess``  grayscale uint8 -> SigLIP pixel values; train-time augmentation
- ``datamodule``  the LightningDataModule over the data stage's splits
- ``module``      the LightningModule (optimizer, schedule, adapter-only checkpoints)
- ``checkpoint``  ``load_finetuned_siglip``: rebuild a fine-tuned model for inference or report generation
- ``stage``       ``train_siglip(config, recorder) -> StageResult``

The Trainer, its callbacks, checkpoint IO, memory accounting and the device/precision choice, shared with
report generation, are in ``worker.training``.

Import the submodules directly; importing this package pulls in nothing heavy.
"""
