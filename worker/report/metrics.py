"""The measures a report shows (worker.metric_registry's metrics, read when a report is built), and how a
number is printed.

One place decides how a number is printed, so a column never mixes "0.9", "1" and "0.9667".
"""

from __future__ import annotations

from worker.metric_registry import TIMING_NOISE_BAND
from worker.metric_registry import Metric as Measure
from worker.metric_registry import find as find_measure
from worker.metric_registry import shown as measures

__all__ = ["TIMING_NOISE_BAND", "Measure", "find_measure", "fmt", "measures", "signed"]


def fmt(value: float | None, decimals: int) -> str:
    """Fixed decimals, thousands separated; an em dash for a missing value."""
    return "—" if value is None else f"{value:,.{decimals}f}"


def signed(value: float, decimals: int) -> str:
    """'+0.050' or '−0.050' (a true minus sign); no sign when the value rounds to zero."""
    if fmt(abs(value), decimals) == fmt(0.0, decimals):
        return fmt(0.0, decimals)
    return ("+" if value > 0 else "−") + fmt(abs(value), decimals)
