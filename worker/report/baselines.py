"""Every configuration against its baselines, on the same items: the un-adapted SigLIP for retrieval (the
train stage's ``base_*`` metrics), the template and nearest-neighbour reports for generation (the evaluate
stage's ``template_*``, ``nn_finetuned_*``, ``nn_base_*``). A row is model minus baseline with its paired
interval (over validation images or test studies where both have per-item values, else over seeds), and the
conclusions say whether the model beats each baseline, from the measures that have such an interval.
Generation rows come once per protocol the evaluate stage scored (both: eval.protocol's metrics unprefixed,
the other protocol's under its name, ``r2gen_template_bleu4``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from worker.report.cells import Cell, difference, summary
from worker.report.metrics import MEASURES, Measure, fmt, signed
from worker.textmetrics.protocol import PROTOCOLS, other_protocol


@dataclass(frozen=True)
class Baseline:
    prefix: str
    """The stage records the baseline's metrics (and per-item values) under the model's names with this prefix."""
    label: str
    short: str
    """Its column header."""
    stage: str
    compared: tuple[str, ...]
    """The model's metrics the report compares with the baseline's, in order."""
    deciding: tuple[str, ...]
    """The ones whose paired interval decides "beats" (all of them must exclude 0, upward)."""


RETRIEVAL = ("i2t_recall@1", "t2i_recall@1", "i2t_recall@5", "t2i_recall@5", "i2t_recall@10", "t2i_recall@10")
GENERATION = ("study_bleu4", "study_rougeL", "bleu4", "rougeL", "meteor", "coco_cider", "clinical_f1_micro",
              "clinical_f1_micro_5")  # the clinical ones only where eval.clinical recorded them
PER_STUDY = ("study_bleu4", "study_rougeL")
BASELINES = (
    Baseline("base_", "base SigLIP (zero-shot)", "Base SigLIP", "train", RETRIEVAL, RETRIEVAL[:2]),
    Baseline("template_", "template baseline (most frequent training text)", "Template", "evaluate",
             GENERATION, PER_STUDY),
    Baseline("nn_finetuned_", "nearest-neighbour baseline (fine-tuned SigLIP)", "NN, fine-tuned", "evaluate",
             GENERATION, PER_STUDY),
    Baseline("nn_base_", "nearest-neighbour baseline (base SigLIP)", "NN, base", "evaluate", GENERATION, PER_STUDY),
)  # fmt: skip


def _measure(stage: str, metric: str) -> Measure:
    return next(m for m in MEASURES if m.stage == stage and m.metric == metric)


def prefixed(measure: Measure, prefix: str) -> Measure:
    """The measure as recorded under a prefix (a baseline's, a protocol's): the same label and decimals, the
    prefixed metric and per-item key."""
    per_item = prefix + measure.per_item if measure.per_item else None
    return replace(measure, metric=prefix + measure.metric, per_item=per_item)


def protocols(cell: Cell, stage: str) -> list[tuple[str, str]]:
    """(metric prefix, protocol name) of each protocol the cell's runs of `stage` scored: the evaluate stage
    scores eval.protocol unprefixed and the other one under its name, so the prefix found names both. A stage
    without protocols (train), or a run from before both were scored, has one, unnamed."""
    recorded = {name for stages in cell.runs.values() for name in ((stages.get(stage) or {}).get("metrics") or {})}
    for protocol in PROTOCOLS:
        if f"{protocol}_bleu4" in recorded:
            return [("", other_protocol(protocol)), (f"{protocol}_", protocol)]
    return [("", "")]


def baseline_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per (baseline, measure, cell, protocol) where the cell recorded both the model's and the
    baseline's value."""
    rows = []
    for baseline in BASELINES:
        for metric in baseline.compared:
            measure = _measure(baseline.stage, metric)
            for cell in cells:
                for prefix, protocol in protocols(cell, baseline.stage):
                    ours, theirs = prefixed(measure, prefix), prefixed(measure, prefix + baseline.prefix)
                    model, base = summary(cell, ours), summary(cell, theirs)
                    if model["mean"] is None or base["mean"] is None:
                        continue
                    diff = difference(cell, cell, ours, theirs)
                    rows.append({
                        "cell": cell.label, "baseline": baseline.prefix.removesuffix("_"),
                        "baseline_label": baseline.label, "short": baseline.short, "stage": baseline.stage,
                        "protocol": protocol, "primary": not prefix, "metric": metric, "label": measure.label,
                        "decimals": measure.decimals, "model": model, "baseline_value": base,
                        "difference": diff.to_dict() if diff else None,
                    })  # fmt: skip
    return rows


def baseline_conclusions(rows: list[dict[str, Any]]) -> list[str]:
    """Per cell, protocol and baseline, one sentence from the deciding measures' intervals; eval.protocol's
    first, then the other protocol's, which name it. Where the other protocol's numbers are the same (text
    both tokenize alike), its sentence is merged into the first one's instead of repeating it."""
    lines: list[str] = []
    primary: dict[tuple[str, str], int] = {}  # (cell, baseline) -> index of eval.protocol's sentence
    for first in (True, False):
        for baseline in BASELINES:
            for cell, protocol in dict.fromkeys((r["cell"], r["protocol"]) for r in rows):
                deciding = [
                    r for metric in baseline.deciding for r in rows
                    if (r["cell"], r["protocol"], r["metric"]) == (cell, protocol, metric)
                    and r["baseline"] == baseline.prefix.removesuffix("_") and r["primary"] is first
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


def _evidence(row: dict[str, Any]) -> str:
    """'ROUGE-L F1, mean per test study 0.315 against 0.289 (+0.026, 95% CI −0.001 to +0.051)'."""
    d, diff = row["decimals"], row["difference"]
    name = row["label"].rsplit(" (", 1)[0]  # the unit is in the table
    values = f"{name} {fmt(row['model']['mean'], d)} against {fmt(row['baseline_value']['mean'], d)}"
    if diff is None:
        return values
    return f"{values} ({signed(diff['mean'], d)}, 95% CI {signed(diff['low'], d)} to {signed(diff['high'], d)})"


def _conclusion(cell: str, baseline: Baseline, rows: list[dict[str, Any]]) -> str:
    diffs = [r["difference"] for r in rows]
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
