"""Run folders keyed by a checkpoint: a stage that reads a checkpoint (`evaluate`, `qualitative`, `export`,
`predict`, and `train-full` for its SigLIP checkpoint) writes into one folder per config and checkpoint,
since the config hash does not see the checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from worker.config import RunConfig


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def output_dir(config: RunConfig, stage: str, checkpoint: str) -> Path:
    """The job's run dir, or one folder per config and checkpoint (the config hash does not see the checkpoint)."""
    if config.paths.run_dir:
        return config.run_path(stage)
    return config.run_path(stage) / f"checkpoint-{short_hash(str(Path(checkpoint).resolve()))}"
