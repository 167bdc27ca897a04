"""What a stage may tell the outside world while it runs.

`jobs` implements this over the database; tests and `jobs run` without a database use MemoryRecorder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class JobLost(RuntimeError):
    """The run no longer owns its job (another worker took it over): it stops at once and writes nothing more,
    not even a checkpoint, since the new owner's files and rows are the job's now."""


@runtime_checkable
class Recorder(Protocol):
    def log_metrics(
        self, metrics: Mapping[str, float], *, split: str, epoch: int | None = None, step: int | None = None
    ) -> None:
        """Record values (e.g. per-epoch losses); the same (split, epoch, step, name) again overwrites."""

    def progress(self, *, epoch: int, step: int, total: int) -> None:
        """Report how far the stage is: step out of total steps of the whole run."""

    def cancelled(self) -> bool:
        """True once the user asked the run to stop; stages check it between steps. Raises JobLost once the run
        lost its job (a cancelled run saves where it stopped; a fenced one must not)."""

    def ensure_owner(self) -> None:
        """Raises JobLost unless the run still owns its job: called right before a stage writes a file that
        outlives the run (a checkpoint), so a run woken after a takeover does not overwrite the new owner's."""


@dataclass
class MetricRow:
    split: str
    epoch: int | None
    step: int | None
    name: str
    value: float


@dataclass
class MemoryRecorder:
    """Keeps everything in lists: for tests and database-free runs."""

    rows: list[MetricRow] = field(default_factory=list)
    progress_events: list[tuple[int, int, int]] = field(default_factory=list)
    cancel_requested: bool = False

    def log_metrics(
        self, metrics: Mapping[str, float], *, split: str, epoch: int | None = None, step: int | None = None
    ) -> None:
        for name, value in metrics.items():
            self.rows = [
                r for r in self.rows if (r.split, r.epoch, r.step, r.name) != (split, epoch, step, name)
            ]
            self.rows.append(MetricRow(split, epoch, step, name, float(value)))

    def progress(self, *, epoch: int, step: int, total: int) -> None:
        self.progress_events.append((epoch, step, total))

    def cancelled(self) -> bool:
        return self.cancel_requested

    def ensure_owner(self) -> None:
        """Nobody else can take over a run recorded in memory."""

    def series(self, name: str, split: str | None = None) -> list[float]:
        """Values of one metric in the order they were recorded."""
        return [r.value for r in self.rows if r.name == name and (split is None or r.split == split)]
