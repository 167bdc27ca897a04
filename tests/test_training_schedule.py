"""The LR schedule both models train with: transformers' warmup-cosine, set up to give the project's schedule."""

from __future__ import annotations

import math

import pytest
import torch

from worker.training.schedule import warmup_cosine_schedule


def expected_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over `warmup` steps (the first step already above 0), then a half cosine to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@pytest.mark.parametrize(("warmup", "total"), [(0, 5), (3, 10), (10, 10), (4, 25)])
def test_each_optimizer_step_runs_at_the_schedules_factor(warmup: int, total: int) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = warmup_cosine_schedule(optimizer, warmup, total)["scheduler"]

    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    assert seen == pytest.approx([0.5 * expected_factor(step, warmup, total) for step in range(total)])
    assert seen[0] > 0  # the first step learns something, unlike transformers' plain schedule
