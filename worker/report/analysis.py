"""A comparison or a sweep, computed from experiment rows (plain dicts).

A cell is one point of the grid (LoRA, or ``peft.method=qlora, peft.r=8``); it ran once per seed. Every measure
is shown per cell as the mean over seeds with a 95% t-interval; two cells are compared by the interval of their
difference (paired by seed, or by test study where the evaluate stage scored each study). Conclusions are worded
from those intervals, and every number keeps the ids of the experiment rows it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.report.baselines import BaselineRow, baseline_conclusions, baseline_rows
from worker.report.cells import Cell, difference, summary
from worker.report.metrics import Measure, find_measure, fmt, measures, signed
from worker.report.stats import t_interval

METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA"}
CURVES = ("train_loss", "val_loss", "i2t_recall@1")
DEFAULT_METRIC = "best_val_loss"
# What the two-cell conclusions talk about, in order; memory is chosen separately (GPU if measured).
HEADLINE = ("samples_per_s", "i2t_recall@1", "best_val_loss", "bleu4", "study_bleu4")


@dataclass(frozen=True)
class Versus:
    """The second of two cells against the first on one measure."""

    ratio: float | None
    """Second mean over first mean."""
    difference: dict[str, Any] | None
    """Second minus first with its paired 95% interval (stats.Interval.to_dict); None without an interval."""


@dataclass(frozen=True)
class MeasureRow:
    """One measure of the report's table: its summary in every cell, and with two cells their difference."""

    stage: str
    metric: str
    label: str
    decimals: int
    lower_is_better: bool | None
    noise_band: float | None
    cells: list[dict[str, Any]]
    """Per cell, the mean over seeds with its 95% t-interval (cells.summary)."""
    versus: Versus | None = None

    def to_dict(self) -> dict[str, Any]:
        row = {"stage": self.stage, "metric": self.metric, "label": self.label, "decimals": self.decimals,
               "lower_is_better": self.lower_is_better, "noise_band": self.noise_band, "cells": self.cells}  # fmt: skip
        if self.versus is not None:
            row |= {"ratio": self.versus.ratio, "difference": self.versus.difference}
        return row


@dataclass
class Comparison:
    """Everything the report shows, computed from the rows; serialised as the report's JSON."""

    kind: str  # "compare" (two cells, one differs from the other) or "sweep"
    compare_job_id: int | None
    report_job_id: int | None
    grid_keys: list[str]
    cells: list[Cell]
    metric: str = DEFAULT_METRIC
    mode: str = "min"
    split: str = ""
    """The data split every run trained and was scored on, in words (DataConfig.describe_split)."""
    table: list[MeasureRow] = field(default_factory=list)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    baselines: list[BaselineRow] = field(default_factory=list)
    """Each cell against its baselines (worker.report.baselines.baseline_rows)."""
    conclusions: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for cell in self.cells for seed in cell.runs})

    def row(self, metric: str, stage: str | None = None) -> MeasureRow | None:
        return next((r for r in self.table if r.metric == metric and stage in (None, r.stage)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "compare_job_id": self.compare_job_id,
            "report_job_id": self.report_job_id,
            "grid_keys": self.grid_keys,
            "seeds": self.seeds,
            "split": self.split,
            "cells": [
                {
                    "label": cell.label,
                    "values": cell.values,
                    "experiments": {
                        str(seed): {
                            stage: {"id": row.get("id"), "job_id": row.get("job_id")} for stage, row in st.items()
                        }
                        for seed, st in sorted(cell.runs.items())
                    },
                }
                for cell in self.cells
            ],
            "metric": self.metric,
            "mode": self.mode,
            "table": [row.to_dict() for row in self.table],
            "curves": {m: {n: [list(p) for p in pts] for n, pts in c.items()} for m, c in self.curves.items()},
            "best": self.best,
            "groups": self.groups,
            "baselines": [row.to_dict() for row in self.baselines],
            "conclusions": self.conclusions,
            "missing": self.missing,
        }


def cell_label(values: Mapping[str, Any], keys: list[str]) -> str:
    if keys == ["peft.method"]:
        return METHOD_NAMES.get(str(values["peft.method"]), str(values["peft.method"]))
    return ", ".join(f"{key}={values[key]}" for key in keys)


def _cells(experiments: Iterable[Mapping[str, Any]], grid: Mapping[str, list[str]]) -> list[Cell]:
    """Cells in the grid's order, each with its latest succeeded experiment per seed and stage."""
    keys = list(grid)
    cells: dict[tuple[str, ...], Cell] = {}
    for row in sorted(experiments, key=lambda r: r.get("id") or 0):
        if str(row.get("status", "succeeded")).lower() != "succeeded":
            continue
        values = dict(row.get("cell") or {"peft.method": row.get("peft_method")})
        if any(key not in values for key in keys):
            continue
        ident = tuple(str(values[key]) for key in keys)
        cell = cells.setdefault(ident, Cell({k: values[k] for k in keys}, cell_label(values, keys)))
        cell.runs.setdefault(int(row.get("seed") or 0), {})[row["stage"]] = dict(row)

    def order(ident: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(grid[k].index(v) if v in grid[k] else len(grid[k]) for k, v in zip(keys, ident, strict=True))

    return [cells[ident] for ident in sorted(cells, key=order)]


def _table(c: Comparison) -> list[MeasureRow]:
    table = []
    for measure in measures():
        summaries = [summary(cell, measure) for cell in c.cells]
        if all(s["mean"] is None for s in summaries):
            continue
        versus = None
        if len(c.cells) == 2:
            a, b = (s["mean"] for s in summaries)
            diff = difference(c.cells[0], c.cells[1], measure)
            versus = Versus(b / a if a and b is not None else None, diff.to_dict() if diff else None)
        table.append(MeasureRow(measure.stage, measure.name, measure.label, measure.decimals, measure.lower_is_better,
                                measure.noise_band, summaries, versus))  # fmt: skip
    return table


def _curves(
    cells: list[Cell], metric_rows: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per-epoch series of each cell's training runs, averaged over its seeds: label -> metric -> [(epoch, mean)]."""
    owner = {stages["train"]["id"]: cell.label for cell in cells for stages in cell.runs.values() if "train" in stages}
    sums: dict[str, dict[str, dict[int, list[float]]]] = {}
    for row in metric_rows:
        label = owner.get(row["experiment_id"])
        if label is None or row["name"] not in CURVES or row.get("epoch") is None or row.get("value") is None:
            continue
        sums.setdefault(label, {}).setdefault(row["name"], {}).setdefault(int(row["epoch"]), []).append(row["value"])
    return {
        label: {name: [(e, sum(v) / len(v)) for e, v in sorted(points.items())] for name, points in series.items()}
        for label, series in sums.items()
    }


def _best(c: Comparison, measure: Measure) -> dict[str, Any] | None:
    """The cell with the best mean, the runner-up, and the interval of their difference."""
    ranked = [(cell, cell.per_seed(measure)) for cell in c.cells]
    ranked = [(cell, v) for cell, v in ranked if v]
    if not ranked:
        return None
    ranked.sort(key=lambda item: sum(item[1].values()) / len(item[1]), reverse=c.mode == "max")
    best = ranked[0][0]
    result: dict[str, Any] = {"cell": best.label, "values": best.values, **summary(best, measure)}
    if len(ranked) > 1:
        runner_up = ranked[1][0]
        diff = difference(runner_up, best, measure)
        result["runner_up"] = {"cell": runner_up.label, **summary(runner_up, measure)}
        result["difference"] = diff.to_dict() if diff else None
    return result


def _groups(c: Comparison, measure: Measure) -> dict[str, list[dict[str, Any]]]:
    """For each grid key, the measure per value of that key, pooled over the other keys and the seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for key in c.grid_keys:
        pooled: dict[str, tuple[list[float], list[int]]] = {}
        for cell in c.cells:
            values, ids = pooled.setdefault(str(cell.values[key]), ([], []))
            found = cell.per_seed(measure)
            values.extend(found.values())
            ids.extend(cell.experiment_ids(measure.stage, found))
        groups[key] = [
            {"value": value, **t_interval(values, "runs").to_dict(), "experiment_ids": ids}
            for value, (values, ids) in pooled.items()
            if values
        ]
    return groups


def _interval_text(diff: Mapping[str, Any], decimals: int) -> str:
    if diff.get("identical_on"):
        return f"identical on every {diff['identical_on']} of {diff['over']}"
    return f"95% CI {signed(diff['low'], decimals)} to {signed(diff['high'], decimals)} over {diff['over']}"


def verdict(row: MeasureRow, a: str, b: str) -> str | None:
    """One sentence comparing cell b with cell a on one row: higher, lower, no significant difference, or (with no
    interval) "no difference" inside the measure's noise band, else the two numbers and "not a conclusion"."""
    first, second = row.cells[0], row.cells[1]
    if first["mean"] is None or second["mean"] is None:
        return None
    d, label = row.decimals, row.label
    va, vb = first["mean"], second["mean"]
    diff = row.versus.difference if row.versus else None
    numbers = f"{b} {fmt(vb, d)} against {a} {fmt(va, d)}"
    if diff is not None and not diff["significant"]:
        return (
            f"{label}: no significant difference between {b} and {a} "
            f"({numbers}; {b} − {a} {signed(diff['mean'], d)}, {_interval_text(diff, d)})."
        )
    delta = diff["mean"] if diff is not None else vb - va
    if fmt(va, d) == fmt(vb, d) and diff is None:
        return f"{label}: {b} and {a} equal to {d} decimals ({fmt(vb, d)}; one run each, no interval)."
    word = "higher" if delta > 0 else "lower"
    judged = (
        "" if row.lower_is_better is None else (" (better)" if (delta < 0) == row.lower_is_better else " (worse)")
    )
    percent = abs(delta) / abs(va) * 100 if va else None
    # Whole percent reads best; below 10% a decimal keeps a small change from printing as "0% lower".
    relative = "" if percent is None else f", {percent:.0f}% {word}" if percent >= 10 else f", {percent:.1f}% {word}"
    band = row.noise_band
    if diff is None and band and percent is not None and percent <= band * 100:
        # No interval, but the measure states how far one run's value moves by itself: inside that, no difference.
        return f"{label}: no difference (within the ±{band * 100:g}% noise band): {numbers}{relative}."
    if diff is None:
        # Without an interval the sign of a difference may be noise: state the numbers, not a direction.
        why = "one seed" if min(first["n"], second["n"]) < 2 else "no two seeds in common"
        return f"{label}: {numbers}{relative}; {why}, not a conclusion."
    return f"{label}: {b} is {word}{judged} than {a} ({numbers}{relative}; {_interval_text(diff, d)})."


def _pair_conclusions(c: Comparison) -> list[str]:
    a, b = (cell.label for cell in c.cells)
    lines = []
    gpu = c.row("peak_gpu_mem_mb")
    if gpu is None:
        lines.append("No GPU in this run: peak GPU memory was not measured; weight memory is compared instead.")
    for metric, stage in (
        (("peak_gpu_mem_mb" if gpu else "weight_memory_mb"), "train"),
        *((m, None) for m in HEADLINE),
    ):
        row = c.row(metric, stage)
        if row and (line := verdict(row, a, b)):
            lines.append(line)
    return lines


def _best_conclusion(c: Comparison) -> list[str]:
    best = c.best
    if best is None:
        return [f"No configuration recorded {c.metric}; no best configuration."]
    measure = find_measure(c.metric)
    d = measure.decimals
    spread = f" ± {fmt(best['high'] - best['mean'], d)}" if best["high"] is not None else ""
    line = (
        f"Best configuration by {measure.label.split(' (')[0].lower()} ({'lowest' if c.mode == 'min' else 'highest'}):"
        f" {best['cell']}, {fmt(best['mean'], d)}{spread} over {best['n']} seed{'s' if best['n'] != 1 else ''}"
    )
    runner = best.get("runner_up")
    if runner is None:
        return [line + "."]
    diff = best.get("difference")
    next_best = f"the next best, {runner['cell']} with {fmt(runner['mean'], d)}"
    if diff is None:
        return [f"{line}; {next_best}, may be as good (one seed, no interval)."]
    if not diff["significant"]:
        return [f"{line}; within noise of {next_best} (no significant difference, {_interval_text(diff, d)})."]
    return [f"{line}; better than {next_best} ({_interval_text(diff, d)})."]


def compare_runs(
    experiments: Iterable[Mapping[str, Any]],
    metric_rows: Iterable[Mapping[str, Any]],
    *,
    grid: Mapping[str, list[str]] | None = None,
    kind: str = "compare",
    compare_job_id: int | None = None,
    report_job_id: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    failures: Iterable[Mapping[str, str]] = (),
    split: str = "",
) -> Comparison:
    """Build the report from experiment rows ({id, job_id, stage, status, metrics, cell, seed, per_item, and for
    evaluate runs protocol: the scoring protocol of their unprefixed text metrics, their eval.protocol}) and
    metric rows ({experiment_id, split, epoch, step, name, value}). `grid` is the sweep's key -> values in
    order (a comparison's is peft.method = lora, qlora); failures are {label, reason} of steps that did not
    succeed."""
    grid = {k: [str(v) for v in values] for k, values in (grid or {"peft.method": ["lora", "qlora"]}).items()}
    measure = find_measure(metric or DEFAULT_METRIC)
    c = Comparison(
        kind=kind,
        compare_job_id=compare_job_id,
        report_job_id=report_job_id,
        grid_keys=list(grid),
        cells=_cells(experiments, grid),
        metric=measure.name,
        mode=mode or ("min" if measure.lower_is_better else "max"),
        split=split,
    )
    c.table = _table(c)
    c.curves = _curves(c.cells, metric_rows)
    c.missing = [f"{f['label']}: {f['reason']}" for f in failures]
    if kind == "sweep":
        c.best = _best(c, measure)
        c.groups = _groups(c, measure)
        c.conclusions = _best_conclusion(c)
    if len(c.cells) == 2:
        c.conclusions += _pair_conclusions(c)
    c.baselines = baseline_rows(c.cells)
    c.conclusions += baseline_conclusions(c.baselines)
    if c.missing:
        c.conclusions.append("Incomplete: " + "; ".join(c.missing) + ".")
    return c
