"""The stages the job system can run, and where their functions live.

Stage functions are referenced by import path and imported only when a job runs, so that the CLI and
the API start without torch. Every stage function has the signature
``fn(config: RunConfig, recorder: Recorder, **params) -> StageResult``; ``params`` are the stage's
own inputs (a checkpoint path, a split), stored with the job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from db.models import MAX_ROW_ID
from jobs.core.text import StorableStr


class Stage(StrEnum):
    prepare_data = "prepare-data"
    train = "train"
    train_full = "train-full"
    evaluate = "evaluate"
    qualitative = "qualitative"
    compare = "compare"
    sweep = "sweep"
    report = "report"
    export = "export"
    predict = "predict"


STAGE_FUNCTIONS: dict[Stage, str] = {
    Stage.prepare_data: "worker.data.stage:prepare_data",
    Stage.train: "worker.siglip.stage:train_siglip",
    Stage.train_full: "worker.generation.stage:train_full",
    Stage.evaluate: "worker.generation.evaluate:evaluate",
    Stage.qualitative: "worker.generation.qualitative:qualitative",
    Stage.export: "worker.export.stage:export",
    # Named for what users ask ("predict on my images"); worker/generation/predict.py scores dataset splits.
    Stage.predict: "worker.inference.stage:predict_images",
    # The report reads the experiments table, so its stage function is in jobs, not worker.
    Stage.report: "jobs.pipelines.report:report_stage",
}
# A comparison or a sweep is not one stage function but a canvas of child jobs (jobs/pipelines/).
ORCHESTRATED_STAGES = {Stage.compare, Stage.sweep}

# Bounds on a sweep: each run is a training job (three with generation), so a typo must not queue thousands.
MAX_SWEEP_RUNS = 64
MAX_SEEDS = 20
DOTTED_KEY = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
GridKey = Annotated[str, StringConstraints(pattern=DOTTED_KEY, max_length=100)]
GridValue = Annotated[StorableStr, StringConstraints(min_length=1, max_length=200)]
MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_@.-]+$", max_length=64)]

# Which Celery queue a stage goes to: GPU work apart from CPU work.
GPU_STAGES = {Stage.train, Stage.train_full, Stage.evaluate, Stage.qualitative, Stage.predict}
# A GPU class names a kind of GPU (a100, h100, l4...): its jobs go to the queue gpu.<class>, which only the
# workers started with `--queues gpu.<class>` take, so a job that needs 80 GB never lands on a 24 GB card.
GPU_CLASS_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
# A Hugging Face repo id, namespace/name (the Hub checks the rest when pushing).
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"


def stage_function(stage: Stage) -> Callable[..., Any]:
    """Import the stage's function (pulls in torch for the ML stages)."""
    module_name, _, attr = STAGE_FUNCTIONS[stage].partition(":")
    return getattr(importlib.import_module(module_name), attr)


class StageParams(BaseModel):
    """Inputs a stage takes besides its config; stored with the job, shared by the CLI and the API."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    siglip_checkpoint: StorableStr | None = Field(
        None, min_length=1, max_length=4096, description="train-full: the SigLIP adapter checkpoint."
    )
    checkpoint: StorableStr | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="evaluate/qualitative: the train-full checkpoint; export/predict: a train or train-full one.",
    )
    split: Literal["train", "val", "test"] = Field("test", description="evaluate/qualitative: which split.")
    num_samples: int = Field(10, ge=1, le=1000, description="qualitative: studies to show.")
    with_generation: bool = Field(False, description="compare: also train and evaluate report generation.")
    compare_job: int | None = Field(
        None, ge=1, le=MAX_ROW_ID, description="report: the comparison job (default: latest)."
    )
    images: list[Annotated[StorableStr, Field(min_length=1, max_length=4096)]] | None = Field(
        None, min_length=1, max_length=1000, description="predict: image files or folders (PNG, JPEG, DICOM)."
    )
    top_k: int = Field(5, ge=1, le=100, description="predict: most similar training reports shown per image.")
    merge: bool = Field(False, description="export: also write the merged full-precision SigLIP.")
    push_to_hub: str | None = Field(
        None, pattern=HUB_REPO_PATTERN, description="export: push the output to this Hub repo (user/name; HF_TOKEN)."
    )
    private: bool = Field(False, description="export: create the Hub repo private.")
    grid: dict[GridKey, list[GridValue]] | None = Field(
        None,
        max_length=8,
        description='sweep: dotted config key -> values to try, e.g. {"peft.method": ["lora", "qlora"], "peft.r": '
        '["8", "16"]}; every combination runs.',
    )
    seeds: int | None = Field(
        None, ge=1, le=MAX_SEEDS, description="compare/sweep: run every configuration with this many seeds."
    )
    seed_list: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        None, min_length=1, max_length=MAX_SEEDS, description="compare/sweep: these seeds instead of --seeds N."
    )
    metric: MetricName | None = Field(
        None, description="sweep: the metric that picks the best configuration (default: best validation loss)."
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="sweep: whether the best configuration has the lowest or the highest metric."
    )

    @model_validator(mode="after")
    def _sweep_bounds(self) -> StageParams:
        if self.seeds is not None and self.seed_list is not None:
            raise ValueError("give --seeds (seeds) or --seed-list (seed_list), not both")
        if self.seed_list is not None and len(set(self.seed_list)) != len(self.seed_list):
            raise ValueError(f"seed_list repeats a seed: {self.seed_list}")
        for key, values in (self.grid or {}).items():
            if not 1 <= len(values) <= MAX_SWEEP_RUNS:
                raise ValueError(f"grid key '{key}' needs 1 to {MAX_SWEEP_RUNS} values, got {len(values)}")
            if len(set(values)) != len(values):
                raise ValueError(f"grid key '{key}' repeats a value: {', '.join(values)}")
        return self

    def seed_values(self, base_seed: int) -> list[int]:
        """The seeds every configuration runs with: seed_list, or `seeds` consecutive ones from the config's."""
        if self.seed_list is not None:
            return list(self.seed_list)
        return [base_seed + i for i in range(self.seeds or 1)]

    def for_stage(self, stage: Stage) -> dict[str, Any]:
        """The keyword arguments the stage function takes; missing required ones raise ValueError."""
        needed = STAGE_PARAMS.get(stage, ())
        kwargs = {name: getattr(self, name) for name in needed}
        for name in REQUIRED_PARAMS.get(stage, ()):
            if kwargs.get(name) is None:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"stage '{stage.value}' needs {flag} {'KEY=V1,V2' if name == 'grid' else 'PATH'}")
        return kwargs


STAGE_PARAMS: dict[Stage, tuple[str, ...]] = {
    Stage.train_full: ("siglip_checkpoint",),
    Stage.evaluate: ("checkpoint", "split"),
    Stage.qualitative: ("checkpoint", "split", "num_samples"),
    Stage.compare: ("with_generation", "seeds", "seed_list"),
    Stage.sweep: ("with_generation", "grid", "seeds", "seed_list", "metric", "mode"),
    Stage.report: ("compare_job",),
    Stage.export: ("checkpoint", "merge", "push_to_hub", "private"),
    Stage.predict: ("checkpoint", "images", "top_k"),
}
REQUIRED_PARAMS: dict[Stage, tuple[str, ...]] = {
    Stage.train_full: ("siglip_checkpoint",),
    Stage.evaluate: ("checkpoint",),
    Stage.qualitative: ("checkpoint",),
    Stage.export: ("checkpoint",),
    Stage.predict: ("checkpoint", "images"),
    Stage.sweep: ("grid",),
}
# The checkpoint kinds (worker/checkpoint_info.py) each stage's checkpoint param takes; a file of another kind
# is refused when the job is submitted (jobs/core/checkpoint_kinds.py), not by a traceback in the worker.
CHECKPOINT_KINDS: dict[Stage, dict[str, tuple[str, ...]]] = {
    Stage.train_full: {"siglip_checkpoint": ("train",)},
    Stage.evaluate: {"checkpoint": ("train-full",)},
    Stage.qualitative: {"checkpoint": ("train-full",)},
    Stage.export: {"checkpoint": ("train", "train-full")},
    Stage.predict: {"checkpoint": ("train", "train-full")},
}
