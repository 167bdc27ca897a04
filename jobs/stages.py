"""The stages the job system can run, and where their functions live.

Stage functions are referenced by import path and imported only when a job runs, so that the CLI and
the API start without torch. Every stage function has the signature
``fn(config: RunConfig, recorder: Recorder, **params) -> StageResult``; ``params`` are the stage's
own inputs (a checkpoint path, a split), stored with the job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from enum import Enum
from typing import Any


class Stage(str, Enum):
    prepare_data = "prepare-data"
    train = "train"
    train_full = "train-full"
    evaluate = "evaluate"
    qualitative = "qualitative"
    compare = "compare"
    report = "report"


STAGE_FUNCTIONS: dict[Stage, str] = {
    Stage.prepare_data: "worker.data.stage:prepare_data",
    Stage.train: "worker.siglip.stage:train_siglip",
    Stage.train_full: "worker.reportgen.stage:train_full",
    Stage.evaluate: "worker.reportgen.evaluate:evaluate",
    Stage.qualitative: "worker.reportgen.qualitative:qualitative",
}

# Which Celery queue a stage goes to: GPU work apart from CPU work.
GPU_STAGES = {Stage.train, Stage.train_full, Stage.evaluate, Stage.qualitative}


def stage_function(stage: Stage) -> Callable[..., Any]:
    """Import the stage's function (pulls in torch for the ML stages)."""
    module_name, _, attr = STAGE_FUNCTIONS[stage].partition(":")
    return getattr(importlib.import_module(module_name), attr)
