"""The report's bottom line: a few sentences, computed from the numbers, that say what won, by how much, how
sure the comparison is, and against which baselines, before the tables.

`bottom_line` takes plain numbers and verdicts, so it can be read and tested apart from how the report's
rows are built; `comparison_outcomes` and `baseline_verdicts` pick them out of a Comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.metric_registry import BASELINES, compared_with_baseline

if TYPE_CHECKING:
    from worker.report.analysis import Comparison, MeasureRow
    from worker.report.baselines import BaselineRow

# What the configurations are for (quality) and what they cost; the verdict weighs quality first.
QUALITY = ("i2t_recall@1", "study_rougeL", "study_bleu4", "best_val_loss")


@dataclass(frozen=True)
class Outcome:
    """One measure of two configurations: `second − first` with its 95% interval when there is one."""

    label: str
    first: float
    second: float
    lower_is_better: bool
    low: float | None = None
    high: float | None = None

    def better(self) -> str | None:
        """'second' or 'first' when the interval excludes 0 in either direction; None: not shown (or no interval)."""
        if self.low is None or self.high is None or self.low <= 0 <= self.high:
            return None
        second_higher = self.low > 0
        return "second" if second_higher != self.lower_is_better else "first"

    def change(self) -> str:
        """'41% lower' (second against first)."""
        if not self.first:
            return f"{self.second:g} against {self.first:g}"
        percent = (self.second - self.first) / abs(self.first) * 100
        return f"{abs(percent):.0f}% {'higher' if percent > 0 else 'lower'}"


@dataclass(frozen=True)
class BaselineVerdict:
    """Whether one configuration beats one baseline (None: one seed, no interval to decide)."""

    configuration: str
    baseline: str
    beats: bool | None


def bottom_line(
    first: str, second: str, quality: Sequence[Outcome], cost: Sequence[Outcome], seeds: int,
    baselines: Sequence[BaselineVerdict] = (),
) -> list[str]:  # fmt: skip
    """3-5 sentences: the verdict on quality, the cost difference, how sure, and the baselines."""
    wins = [o for o in quality if o.better() == "second"]
    losses = [o for o in quality if o.better() == "first"]
    decided = [o for o in quality if o.low is not None]
    lines = [_verdict(first, second, wins, losses, decided, quality)]
    if cost:
        lines.append(f"{second} against {first}: " + "; ".join(f"{o.label} {o.change()}" for o in cost) + ".")
    lines.append(_certainty(seeds, decided))
    if text := _baselines(baselines):
        lines.append(text)
    return lines


def _named(outcomes: Iterable[Outcome]) -> str:
    return ", ".join(f"{o.label} ({o.second:.3g} against {o.first:.3g})" for o in outcomes)


def _verdict(
    first: str, second: str, wins: list[Outcome], losses: list[Outcome], decided: list[Outcome],
    quality: Sequence[Outcome],
) -> str:  # fmt: skip
    if wins and not losses:
        return f"{second} wins on quality: better than {first} on {_named(wins)}, worse on none."
    if losses and not wins:
        return f"{first} wins on quality: {second} is worse on {_named(losses)}, better on none."
    if wins and losses:
        return f"Mixed: {second} is better on {_named(wins)} and worse on {_named(losses)}."
    if decided:
        return f"No winner on quality: {second} and {first} do not differ significantly on {_named(decided)}."
    if quality:
        return (
            f"No winner can be named on quality from these runs, {second} against {first}: {_named(quality)}; "
            "no measure has an interval."
        )
    return f"No quality measure was recorded for both {second} and {first}."


def _certainty(seeds: int, decided: list[Outcome]) -> str:
    if seeds < 2 and not decided:
        return "One seed and no per-item intervals: these differences may be noise; run --seeds 3 or more."
    over = f"{seeds} seed{'s' if seeds != 1 else ''}"
    return f"Intervals are 95% ({over}; per-item paired bootstrap where the stage kept per-item values)."


def _baselines(verdicts: Sequence[BaselineVerdict]) -> str | None:
    """One clause per outcome, naming every baseline with that outcome: 'LoRA and QLoRA beat the template
    baseline and the nearest-neighbour baseline (base SigLIP); neither beats ...'."""
    by_baseline: dict[str, list[BaselineVerdict]] = {}
    for verdict in verdicts:
        by_baseline.setdefault(verdict.baseline, []).append(verdict)
    by_outcome: dict[str, list[str]] = {}
    for baseline, group in by_baseline.items():
        by_outcome.setdefault(_outcome(group), []).append(f"the {baseline}")
    parts = [f"{outcome} {_and(baselines)}" for outcome, baselines in by_outcome.items()]
    return ("Baselines: " + "; ".join(parts) + ".") if parts else None


def _outcome(group: list[BaselineVerdict]) -> str:
    """Who beats one baseline: 'LoRA and QLoRA beat', 'neither beats', 'only LoRA beats', or undecided."""
    beat = [v.configuration for v in group if v.beats]
    if any(v.beats is None for v in group):
        return "undecided (one seed) against"
    if len(beat) == len(group):
        return f"{_and(beat)} beat" if len(beat) > 1 else f"{beat[0]} beats"
    if not beat:
        return "neither beats" if len(group) == 2 else "none beats"
    return f"only {_and(beat)} beats"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def comparison_outcomes(table: Iterable[MeasureRow], names: Sequence[str]) -> list[Outcome]:
    """The Outcome of each report row (two cells) whose metric is in `names`, in that order."""
    rows = {row.metric: row for row in table if row.stage in ("train", "evaluate")}
    outcomes = []
    for name in names:
        row = rows.get(name)
        if row is None or row.lower_is_better is None or None in (c["mean"] for c in row.cells):
            continue
        diff = (row.versus.difference if row.versus else None) or {}
        label = row.label.rsplit(" (", 1)[0]
        first, second = (c["mean"] for c in row.cells)
        outcomes.append(Outcome(label, first, second, row.lower_is_better, diff.get("low"), diff.get("high")))
    return outcomes


def baseline_verdicts(rows: Iterable[BaselineRow]) -> list[BaselineVerdict]:
    """Per configuration and baseline (the primary protocol's rows): beats when every deciding measure's
    interval is above 0, as the baseline conclusions decide."""
    deciding = {
        baseline.prefix.removesuffix("_"): {m.name for m in compared_with_baseline(baseline) if m.decides}
        for baseline in BASELINES
    }
    grouped: dict[tuple[str, str], list[BaselineRow]] = {}
    for row in rows:
        if row.primary and row.metric in deciding.get(row.baseline, ()):
            grouped.setdefault((row.cell, row.baseline_label), []).append(row)
    verdicts = []
    for (cell, label), group in grouped.items():
        diffs = [row.difference for row in group]
        beats = None if any(d is None for d in diffs) else all(d["low"] > 0 for d in diffs)
        verdicts.append(BaselineVerdict(cell, label, beats))
    return verdicts


def report_bottom_line(c: Comparison) -> list[str]:
    """The bottom line of a two-configuration report; a sweep's is its best configuration."""
    if len(c.cells) != 2:
        return c.conclusions[:1] if c.kind == "sweep" else []
    first, second = (cell.label for cell in c.cells)
    memory = "peak_gpu_mem_mb" if c.row("peak_gpu_mem_mb") else "weight_memory_mb"
    return bottom_line(
        first,
        second,
        comparison_outcomes(c.table, QUALITY),
        comparison_outcomes(c.table, (memory, "samples_per_s")),
        len(c.seeds),
        baseline_verdicts(c.baselines),
    )
