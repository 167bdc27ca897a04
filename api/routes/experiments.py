"""Query the experiments table and its per-epoch metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.models import NOT_FOUND, ExperimentId, ExperimentView, MetricView, PeftName, Stage
from jobs import service

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("", response_model=list[ExperimentView])
def list_experiments(
    stage: Annotated[Stage | None, Query(description="Only runs of this stage.")] = None,
    peft: Annotated[PeftName | None, Query(description="Only runs with this PEFT method.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[ExperimentView]:
    return service.list_experiments(stage=stage.value if stage else None, peft=peft, limit=limit)


@router.get("/{experiment_id}/metrics", response_model=list[MetricView], responses=NOT_FOUND)
def experiment_metrics(experiment_id: ExperimentId) -> list[MetricView]:
    return service.experiment_metrics(experiment_id)
