"""Every configuration against its baselines, on the same items: the un-adapted SigLIP for retrieval (the
train stage's ``base_*`` metrics), the template and nearest-neighbour reports for generation (the evaluate
stage's ``template_*``, ``nn_finetuned_*``, ``nn_base_*``). A row is model minus baseline with its paired
interval (over validation images or test studies where both have per-item values, else over seeds), and the
conclusions say whether the model beats each baseline, from the measures that have such an interval.
Generation rows come once per protocol the evaluate stage scored (both: eval.protocol's metrics unprefixed,
the other protocol's under its name, ``r2gen_template_bleu4``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from worker.metric_registry import BASELINES, Baseline, compared_with_baseline
from worker.report.cells import Cell, difference, summary
from worker.report.metrics import Measure, fmt, signed
from worker.textmetrics.protocol import other_protocol


@dataclass(frozen=True)
class BaselineRow:
    """One measure of one configuration under one scoring protocol: the model against one baseline."""

    cell: str
    baseline: str
    """The baseline's name (its prefix without the underscore)."""
    baseline_label: str
    short: str
    stage: str
    protocol: str
    """The scoring protocol of both values; "" for a stage that has none (retrieval)."""
    primary: bool
    """The run's own protocol (eval.protocol), as opposed to the other one evaluate also scored."""
    metric: str
    label: str
    decimals: int
    model: dict[str, Any]
    baseline_value: dict[str, Any]
    difference: dict[str, Any] | None
    """Model minus baseline with its paired 95% interval (stats.Interval.to_dict); None without an interval."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prefixed(measure: Measure, prefix: str) -> Measure:
    """The measure as recorded under a prefix (a baseline's, a protocol's): the same label and decimals, the
    prefixed metric and per-item key."""
    per_item = prefix + measure.per_item if measure.per_item else None
    return replace(measure, name=prefix + measure.name, per_item=per_item)


def protocols(cell: Cell, measure: Measure) -> list[tuple[str, str]]:
    """(metric prefix, protocol name) of each protocol the measure is scored under in the cell's runs: the run's
    own protocol (its eval.protocol, recorded with the run) unprefixed, and for a measure scored under each
    protocol the other one under its name. One, unnamed, for runs without a protocol (retrieval)."""
    own = next((stages[measure.stage].get("protocol") for stages in cell.runs.values() if measure.stage in stages),
               None)  # fmt: skip
    if not own:
        return [("", "")]
    if not measure.protocols:
        return [("", own)]
    other = other_protocol(own)
    return [("", own), (f"{other}_", other)]


def baseline_rows(cells: list[Cell]) -> list[BaselineRow]:
    """One row per (baseline, measure, cell, protocol) where the cell recorded both the model's and the
    baseline's value."""
    rows = []
    for baseline in BASELINES:
        for measure in compared_with_baseline(baseline):
            for cell in cells:
                for prefix, protocol in protocols(cell, measure):
                    ours, theirs = prefixed(measure, prefix), prefixed(measure, prefix + baseline.prefix)
                    model, base = summary(cell, ours), summary(cell, theirs)
                    if model["mean"] is None or base["mean"] is None:
                        continue
                    diff = difference(cell, cell, ours, theirs)
                    rows.append(BaselineRow(
                        cell=cell.label, baseline=baseline.prefix.removesuffix("_"), baseline_label=baseline.label,
                        short=baseline.short, stage=baseline.stage, protocol=protocol, primary=not prefix,
                        metric=measure.name, label=measure.label, decimals=measure.decimals, model=model,
                        baseline_value=base, difference=diff.to_dict() if diff else None,
                    ))  # fmt: skip
    return rows


def baseline_conclusions(rows: list[BaselineRow]) -> list[str]:
    """Per cell, protocol and baseline, one sentence from the deciding measures' intervals; eval.protocol's
    first, then the other protocol's, which name it. Where the other protocol's numbers are the same (text
    both tokenize alike), its sentence is merged into the first one's instead of repeating it."""
    lines: list[str] = []
    primary: dict[tuple[str, str], int] = {}  # (cell, baseline) -> index of eval.protocol's sentence
    for first in (True, False):
        for baseline in BASELINES:
            deciding_names = [m.name for m in compared_with_baseline(baseline) if m.decides]
            for cell, protocol in dict.fromkeys((r.cell, r.protocol) for r in rows):
                deciding = [
                    r for metric in deciding_names for r in rows
                    if (r.cell, r.protocol, r.metric) == (cell, protocol, metric)
                    and r.baseline == baseline.prefix.removesuffix("_") and r.primary is first
                ]  # fmt: skip
                if not deciding:
                    continue
                line, key = _conclusion(cell, baseline, deciding), (cell, baseline.prefix)
                if first:
                    primary[key] = len(lines)
                elif key in primary and lines[primary[key]].startswith(line):
                    lines[primary[key]] = f"{line[:-1]}; the same under the {protocol} protocol."
                    continue
                else:
                    line = _conclusion(f"{cell}, {protocol} protocol", baseline, deciding)
                lines.append(line)
    return lines


def _evidence(row: BaselineRow) -> str:
    """'ROUGE-L F1, mean per test study 0.315 against 0.289 (+0.026, 95% CI −0.001 to +0.051)'."""
    d, diff = row.decimals, row.difference
    name = row.label.rsplit(" (", 1)[0]  # the unit is in the table
    values = f"{name} {fmt(row.model['mean'], d)} against {fmt(row.baseline_value['mean'], d)}"
    if diff is None:
        return values
    return f"{values} ({signed(diff['mean'], d)}, 95% CI {signed(diff['low'], d)} to {signed(diff['high'], d)})"


def _conclusion(cell: str, baseline: Baseline, rows: list[BaselineRow]) -> str:
    diffs = [r.difference for r in rows]
    evidence = "; ".join(_evidence(r) for r in rows)
    retrieval = baseline.stage == "train"
    if any(d is None for d in diffs):
        return f"{cell} against the {baseline.label}: {evidence}; one seed, not a conclusion."
    if all(d["low"] > 0 for d in diffs):
        verb = "fine-tuning improved retrieval over the" if retrieval else "the model beats the"
    elif all(d["high"] < 0 for d in diffs):
        verb = "fine-tuning made retrieval worse than the" if retrieval else "the model is worse than the"
    else:  # an interval that holds 0 (or differences of both signs): no difference shown
        verb = "fine-tuning did not improve retrieval over the" if retrieval else "the model does not beat the"
    over = " and ".join(dict.fromkeys(d["over"] for d in diffs))
    return f"{cell}: {verb} {baseline.label}, model against baseline: {evidence}; over {over}."
