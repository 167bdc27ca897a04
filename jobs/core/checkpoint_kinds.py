"""A stage's checkpoint param must name a checkpoint of the kind that stage reads (``CHECKPOINT_KINDS``).

Checked when a job is submitted, torch-free (worker/checkpoint_info.py reads the file's keys without
loading a tensor), so a `train` checkpoint given to `qualitative` is one line and no job row. A path that
does not exist yet is left to the worker: a job may be queued for a checkpoint another job will write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.core.stages import CHECKPOINT_KINDS, Stage

SOURCE_STAGE = {"train": "`train` (a SigLIP adapter)", "train-full": "`train-full` (a report generator)"}


class WrongCheckpointKind(ValueError):
    """`key` names the param (``params.checkpoint``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def check_checkpoint_kinds(stage: Stage, params: Mapping[str, Any]) -> str | None:
    """WrongCheckpointKind for an existing checkpoint param of a kind ``stage`` does not take; otherwise the
    PEFT method the checkpoint was trained with (None when no checkpoint could be read yet)."""
    method = None
    for name, kinds in CHECKPOINT_KINDS.get(stage, {}).items():
        value = params.get(name)
        if not isinstance(value, str) or not Path(value).is_file():
            continue
        from worker.checkpoint_info import RUN_CONFIG_KEY, NotACheckpoint, checkpoint_kind, read_header

        wanted = " or ".join(SOURCE_STAGE[kind] for kind in kinds)
        key = f"params.{name}"
        try:
            header = read_header(value)
        except NotACheckpoint as exc:
            raise WrongCheckpointKind(key, f"{key}: {exc}; `{stage.value}` takes a checkpoint of {wanted}") from None
        kind = checkpoint_kind(header)
        if kind not in kinds:
            what = f"a checkpoint of {SOURCE_STAGE[kind]}" if kind else "not a checkpoint of train or train-full"
            raise WrongCheckpointKind(
                key, f"{key}: {value} is {what}; `{stage.value}` takes the best_checkpoint of {wanted}"
            )
        method = header[RUN_CONFIG_KEY].get("peft", {}).get("method")
    return method
