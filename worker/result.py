"""What a stage returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class StageResult:
    stage: str
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final values under the names the job system records and the report reads (train_loss, i2t_recall@1,
    peak_gpu_mem_mb, ...)."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """Named output paths: checkpoints, prediction files, reports."""
    status: Literal["succeeded", "cancelled"] = "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
