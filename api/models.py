"""What the HTTP API takes and returns.

Responses are the job service's own views (re-exported here so routes import models from one place);
the request model is the API's: typed, bounded options the way `jobs submit` takes them, turned into
the service's `SubmitRequest`. The service checks its files and models against the allowed roots (for
the CLI and the API alike); `JobSubmission.location_of` turns the key it names back into a body field.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from db.models import MAX_ROW_ID
from jobs.core.schemas import ExperimentView, JobState, JobView, MetricView, SubmitRequest
from jobs.core.stages import GPU_CLASS_PATTERN, Stage, StageParams
from jobs.core.text import StorableStr
from jobs.service.shortcuts import PeftName, shortcut_keys, shortcut_overrides, with_shortcuts

__all__ = [
    "NOT_FOUND",
    "ConflictView",
    "ErrorView",
    "ExperimentId",
    "ExperimentView",
    "HealthView",
    "JobId",
    "JobState",
    "JobSubmission",
    "JobView",
    "MetricView",
    "PeftName",
    "ReportId",
    "Stage",
]

# Ids beyond what the id columns hold are a 422 on every backend, not an overflow deep in the driver.
JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A job id, from `POST /jobs` or `GET /jobs`.")]
ExperimentId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="An experiment id, from `GET /experiments`.")]
ReportId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The id of the report job that wrote the report.")]


def override_text(value: Any) -> Any:
    """A JSON number or boolean as the text `--set` takes (0.001, true); anything else as it came."""
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a number must be finite")
        return json.dumps(value)
    return value


# JSON numbers and booleans are accepted where `--set` takes their text: {"train.lr": 0.001} is "0.001".
OverrideValue = Annotated[
    StorableStr,
    BeforeValidator(override_text),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}),
]


class _Submission(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stage: Stage = Field(description="Which stage to run.")
    preset: str | None = Field(
        "smoke", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="Preset name under configs/."
    )
    config: StorableStr | None = Field(
        None, min_length=1, max_length=4096, description="A YAML config file (under configs/ or the data roots)."
    )


class JobSubmission(with_shortcuts(_Submission)):  # type: ignore[misc]
    """The body of `POST /jobs`: a stage, its config and its inputs, with the same options as `jobs submit`.

    The shortcuts (epochs, batch_size, lr, peft, ...) each set one dotted config key; their types, bounds and
    descriptions are the config's own (jobs/service/shortcuts.py)."""

    overrides: dict[StorableStr, OverrideValue] = Field(
        default_factory=dict,
        max_length=100,
        description='Any other config key, dotted, to a value as `--set` takes it: text, a number or a boolean, '
        'e.g. {"peft.r": 8, "train.lr": 0.001, "data.projection": "Lateral"}.',
    )
    params: StageParams = Field(default_factory=StageParams, description="The stage's own inputs.")
    idempotency_key: StorableStr | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The same request with the same key returns the first job; another request with it is a 409.",
    )
    gpu_class: str | None = Field(
        None, pattern=GPU_CLASS_PATTERN, description="Run GPU stages on the workers of queue gpu.<class> (e.g. a100)."
    )

    @classmethod
    def shortcut_keys(cls) -> dict[str, str]:
        """Field name -> the dotted config key it sets."""
        return shortcut_keys(cls)

    def config_overrides(self) -> dict[str, str]:
        """Every config change this submission asks for, as dotted keys to raw strings (explicit overrides last)."""
        return shortcut_overrides({name: getattr(self, name) for name in self.shortcut_keys()}) | self.overrides

    def location_of(self, field: str | None) -> tuple[str | int, ...]:
        """Where in this body the service's `field` (a config key, `params.x`, `params.images.N`, `config`)
        came from."""
        if field is None:
            return ()
        if field.startswith("params.grid."):  # the grid's keys are dotted themselves: params.grid.<key>.<index>
            key, _, index = field.removeprefix("params.grid.").rpartition(".")
            return ("params", "grid", key, index)
        if field.startswith("params.") or field in ("config", "idempotency_key"):
            return tuple(int(part) if part.isdigit() else part for part in field.split("."))
        if field in self.overrides:
            return ("overrides", field)
        for name, key in self.shortcut_keys().items():
            if key == field and getattr(self, name) is not None:
                return (name,)
        # Not set in this body: it came from the config file or the preset.
        return ("config",) if self.config else ("preset",)

    def to_submit_request(self) -> SubmitRequest:
        return SubmitRequest(
            stage=self.stage,
            preset=self.preset,
            config_path=self.config,
            overrides=self.config_overrides(),
            params=self.params,
            idempotency_key=self.idempotency_key,
            gpu_class=self.gpu_class,
        )


class ErrorView(BaseModel):
    """The body of a 401, 404 or 503: what went wrong and what to do."""

    detail: str


class ConflictView(ErrorView):
    """The body of a 409: the idempotency key belongs to another request, which made job `job_id`."""

    job_id: int


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorView, "description": "No such id."}}


class HealthView(BaseModel):
    """`GET /healthz`: each dependency is "ok" or "error: <why>"."""

    status: Literal["ok", "degraded"]
    database: str
    broker: str
