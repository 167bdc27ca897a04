"""A sweep's runs: every combination of a grid of config values, times the seeds, each config validated.

A comparison is the sweep whose grid is ``peft.method = lora, qlora``. Every run's config goes through the
config model before anything is queued, so an unknown key or a bad value is one error at submission, not a
failed child an hour later.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from jobs.core.stages import MAX_SWEEP_RUNS, Stage, StageParams

COMPARE_GRID: dict[str, list[str]] = {"peft.method": ["lora", "qlora"]}
# The seed has flags of its own (--seeds, --seed-list): as a grid key it would be a second way to say it.
RESERVED_KEYS = {"seed": "use --seeds N or --seed-list instead of a grid over 'seed'"}
# What the data stage's output depends on: runs that agree on these share one prepare-data child.
# The run seed is not among them: the split has a seed of its own (data.split_seed), so the seeds share one.
DATA_SECTIONS = ("data", "model")


class GridError(ValueError):
    """The grid or the seeds cannot be run; the message names the key and the fix."""


@dataclass(frozen=True)
class Run:
    """One child training branch: a point of the grid, one seed, and its full validated config."""

    cell: dict[str, Any]
    """Grid key -> the value the config model made of it (``"8"`` becomes ``8``)."""
    seed: int
    config: dict[str, Any]

    def data_key(self) -> str:
        """Equal for runs whose prepared data (split, caches, tiny models) is the same."""
        return repr([self.config.get(section) for section in DATA_SECTIONS])


def grid_for(stage: Stage, params: StageParams) -> dict[str, list[str]]:
    """The grid a compare or sweep job runs; a comparison's is fixed."""
    if stage is Stage.compare:
        if params.grid:
            raise GridError("compare always runs peft.method=lora,qlora; use `jobs submit sweep --grid ...` for others")
        if params.metric or params.mode:
            raise GridError("--metric and --mode pick a sweep's best configuration; use `jobs submit sweep`")
        return COMPARE_GRID
    if not params.grid:
        raise GridError("a sweep needs at least one --grid KEY=V1,V2")
    return params.grid


def dotted_get(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def expand(
    grid: dict[str, list[str]],
    seeds: list[int],
    *,
    preset: str | None,
    overrides: dict[str, str],
    config_path: str | None = None,
) -> list[Run]:
    """Every (grid point, seed) as a Run, grid keys varying slowest-first in the order given; GridError on a bad
    key or value (the config model's one-line message) or on more than MAX_SWEEP_RUNS runs."""
    from worker.config import ConfigError, load_config  # torch-free

    for key in grid:
        if key in RESERVED_KEYS:
            raise GridError(f"grid key '{key}': {RESERVED_KEYS[key]}")
    # Counted before the product is built: 8 keys of 64 values would be 2.8e14 points.
    configurations = math.prod(len(values) for values in grid.values())
    if configurations * len(seeds) > MAX_SWEEP_RUNS:
        raise GridError(
            f"{configurations} configurations x {len(seeds)} seeds = {configurations * len(seeds)} runs; "
            f"at most {MAX_SWEEP_RUNS} per sweep: fewer values or seeds"
        )
    runs = []
    for point in itertools.product(*grid.values()):
        for seed in seeds:
            try:
                config = load_config(preset, {**overrides, **dict(zip(grid, point, strict=True)), "seed": str(seed)},
                                     config_path).to_dict()  # fmt: skip
            except ConfigError as exc:
                raise GridError(f"grid: {exc}") from None
            runs.append(Run(cell={key: dotted_get(config, key) for key in grid}, seed=seed, config=config))
    cells = [repr(run.cell) for run in runs if run.seed == seeds[0]]
    if len(set(cells)) != len(cells):
        raise GridError(f"grid: two values of one key mean the same config ({', '.join(cells)}); drop one")
    return runs
