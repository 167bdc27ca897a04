"""Liveness and readiness: is the database reachable, is the broker reachable."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.models import HealthView
from jobs import service

router = APIRouter(tags=["health"])


@router.get(
    "/healthz", response_model=HealthView, responses={503: {"model": HealthView, "description": "Something is down."}}
)
def healthz(response: Response) -> HealthView:
    """200 when both answer, 503 otherwise (so container healthchecks and load balancers can act on it)."""
    checks = service.health()
    healthy = all(value == "ok" for value in checks.values())
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthView(
        status="ok" if healthy else "degraded",
        database=checks.get("database", "error: not checked"),
        broker=checks.get("broker", "error: not checked"),
    )
