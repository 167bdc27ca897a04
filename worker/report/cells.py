"""A cell of a comparison or sweep (one grid point and its runs), its summary over seeds, and the paired
difference of two cells (or of a cell and its baseline) on one measure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from worker.report.metrics import Measure
from worker.report.stats import Interval, paired_bootstrap_difference, paired_seed_difference, t_interval


@dataclass
class Cell:
    """One grid point and its runs: seed -> stage -> the latest succeeded experiment row."""

    values: dict[str, Any]
    label: str
    runs: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def per_seed(self, measure: Measure) -> dict[int, float]:
        """The measure's value in every seed that recorded it (or the mean of its per-item values)."""
        found = {}
        items = self.per_item(measure)
        for seed, stages in self.runs.items():
            value = ((stages.get(measure.stage) or {}).get("metrics") or {}).get(measure.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                found[seed] = float(value)
            elif seed in items:
                found[seed] = sum(items[seed].values()) / len(items[seed])
        return found

    def per_item(self, measure: Measure) -> dict[int, dict[str, float]]:
        """seed -> item (test study, validation image) -> value, where the stage wrote per-item values."""
        found = {}
        for seed, stages in self.runs.items():
            values = ((stages.get(measure.stage) or {}).get("per_item") or {}).get(measure.per_item or "")
            if values:
                found[seed] = dict(values)
        return found

    def experiment_ids(self, stage: str, seeds: Iterable[int]) -> list[int]:
        return [self.runs[s][stage]["id"] for s in sorted(seeds) if stage in self.runs.get(s, {})]



def summary(cell: Cell, measure: Measure) -> dict[str, Any]:
    values = cell.per_seed(measure)
    if not values:
        return {"label": cell.label, "mean": None, "low": None, "high": None, "n": 0, "seeds": [], "values": [],
                "experiment_ids": []}  # fmt: skip
    interval = t_interval([values[s] for s in sorted(values)])
    return {
        "label": cell.label,
        "mean": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "n": interval.n,
        "seeds": sorted(values),
        "values": [values[s] for s in sorted(values)],
        "experiment_ids": cell.experiment_ids(measure.stage, values),
    }


def difference(a: Cell, b: Cell, measure: Measure, a_measure: Measure | None = None) -> Interval | None:
    """b's ``measure`` minus a's ``a_measure`` (default: the same measure): over the items (test studies,
    validation images) both scored where the stage wrote per-item values, else over the seeds both ran; None
    without an interval. A cell against its own baseline is ``difference(cell, cell, measure, baseline)``."""
    a_measure = a_measure or measure
    by_item = paired_bootstrap_difference(a.per_item(a_measure), b.per_item(measure), items=measure.items)
    return by_item or paired_seed_difference(a.per_seed(a_measure), b.per_seed(measure))
