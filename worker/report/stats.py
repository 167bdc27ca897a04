"""Confidence intervals for the report: Student t over seeds, and a paired bootstrap over test studies.

No SciPy in the runtime: the t quantile is found by bisection on the t CDF, integrated numerically from the
density (Simpson's rule is exact to ~1e-9 here, far below the two or three decimals a report prints).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the same rows give the same interval on every rebuild of the report


def _t_density(x: np.ndarray, df: int) -> np.ndarray:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))


def _t_cdf(x: float, df: int, points: int = 4001) -> float:
    """P(T <= x) for x >= 0: one half plus the density integrated over [0, x]."""
    grid = np.linspace(0.0, x, points)
    y = _t_density(grid, df)
    h = x / (points - 1)
    simpson = h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())
    return 0.5 + float(simpson)


@functools.lru_cache(maxsize=256)  # a report asks for the same few (p, df) once per cell and measure
def t_quantile(p: float, df: int) -> float:
    """The p quantile (p > 0.5) of Student's t with df degrees of freedom."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """A mean (or mean difference) with its 95% interval; low/high are None when n is too small for one."""

    mean: float
    low: float | None
    high: float | None
    n: int
    over: str
    """What the interval is over, in words: "3 seeds (t)", "590 test studies x 3 seeds (paired bootstrap)"."""
    identical_on: str | None = None
    """For a paired difference: "item" or "seed" when every pair was equal (a zero-width interval that says
    the two runs agree everywhere, not that the difference was measured to be exactly zero)."""

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.excludes_zero}


def t_interval(values: Sequence[float], what: str = "seeds") -> Interval:
    """Mean and 95% Student-t interval of independent values (one per seed); no interval for a single value."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(data.mean())
    over = f"{n} {what} (t)" if n > 1 else f"1 {what.removesuffix('s')}"
    if n == 1:
        return Interval(mean, None, None, 1, over)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * float(data.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, over)


def paired_seed_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval | None:
    """b - a over the seeds both ran (same seed: same split and initialisation); None without two such seeds."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    interval = t_interval(diffs, "paired seeds")
    return replace(interval, identical_on="seed") if not any(diffs) else interval


def paired_bootstrap_difference(
    a: Mapping[int, Mapping[str, float]],
    b: Mapping[int, Mapping[str, float]],
    *,
    items: str = "test studies",
    resamples: int = BOOTSTRAP_RESAMPLES,
    rng_seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Mean per-item difference b - a with a 95% percentile interval from resampling items.

    a and b map seed -> item id (a test study, a validation image) -> value. Items pair by id within a seed
    (both runs of a seed scored the same items); each resample redraws the items of every seed separately and
    averages the seeds' mean differences, so the interval is over items, with the seeds held as they ran."""
    per_seed = []
    for seed in sorted(set(a) & set(b)):
        shared = sorted(set(a[seed]) & set(b[seed]))
        if shared:
            per_seed.append(np.array([b[seed][i] - a[seed][i] for i in shared], dtype=float))
    if not per_seed:
        return None
    rng = np.random.default_rng(rng_seed)
    draws = np.zeros(resamples)
    for diffs in per_seed:
        picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
        draws += diffs[picks].mean(axis=1)
    draws /= len(per_seed)
    mean = float(np.mean([d.mean() for d in per_seed]))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    sizes = sorted({len(d) for d in per_seed})
    count = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    seeds = f" x {len(per_seed)} seeds" if len(per_seed) > 1 else ""
    identical = "item" if not any(d.any() for d in per_seed) else None
    return Interval(
        mean, low, high, sum(len(d) for d in per_seed), f"{count} {items}{seeds} (paired bootstrap)", identical
    )
