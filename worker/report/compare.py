"""Side-by-side table, ratios and computed conclusions for LoRA against QLoRA."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

METHODS = ("lora", "qlora")


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of one stage, and whether smaller values are better."""

    stage: str
    metric: str
    label: str
    lower_is_better: bool | None  # None: neither (e.g. total parameters)


TRAIN_ROWS = [
    Row("train", "train_time_s", "Training time (s)", True),
    Row("train", "samples_per_s", "Throughput (samples/s)", False),
    Row("train", "peak_gpu_mem_mb", "Peak GPU memory, allocated (MB)", True),
    Row("train", "peak_gpu_reserved_mb", "Peak GPU memory, reserved (MB)", True),
    Row("train", "peak_ram_mb", "Peak RAM (MB)", True),
    Row("train", "weight_memory_mb", "Weight memory (MB)", True),
    Row("train", "trainable_params", "Trainable parameters", None),
    Row("train", "total_params", "Total parameters", None),
    Row("train", "best_val_loss", "Best validation loss", True),
    Row("train", "i2t_recall@1", "Image-to-text recall@1", False),
    Row("train", "i2t_recall@5", "Image-to-text recall@5", False),
    Row("train", "i2t_recall@10", "Image-to-text recall@10", False),
    Row("train", "t2i_recall@1", "Text-to-image recall@1", False),
    Row("train", "t2i_recall@5", "Text-to-image recall@5", False),
    Row("train", "t2i_recall@10", "Text-to-image recall@10", False),
]
GENERATION_ROWS = [
    Row("train-full", "train_time_s", "Report generation: training time (s)", True),
    Row("train-full", "best_val_loss", "Report generation: best validation loss", True),
    *(Row("evaluate", f"bleu{n}", f"BLEU-{n}", False) for n in range(1, 5)),
    Row("evaluate", "rouge1", "ROUGE-1", False),
    Row("evaluate", "rouge2", "ROUGE-2", False),
    Row("evaluate", "rougeL", "ROUGE-L", False),
    Row("evaluate", "meteor", "METEOR", False),
    Row("evaluate", "coco_cider", "CIDEr (COCO toolkit)", False),
    Row("evaluate", "cosine_generated", "Image-text cosine, generated", False),
    Row("evaluate", "cosine_reference", "Image-text cosine, reference", False),
]
CURVES = ("train_loss", "val_loss", "i2t_recall@1")


@dataclass
class Comparison:
    """Everything the report shows, computed from the rows; serialised as the report's JSON."""

    compare_job_id: int | None
    experiments: dict[str, dict[str, dict[str, Any]]]  # method -> stage -> experiment row
    table: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    conclusions: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def value(self, method: str, stage: str, metric: str) -> float | None:
        row = self.experiments.get(method, {}).get(stage)
        value = (row or {}).get("metrics", {}).get(metric)
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "compare_job_id": self.compare_job_id,
            "experiments": {
                method: {stage: {"id": row.get("id"), "job_id": row.get("job_id")} for stage, row in stages.items()}
                for method, stages in self.experiments.items()
            },
            "table": self.table,
            "curves": {m: {n: [list(p) for p in pts] for n, pts in c.items()} for m, c in self.curves.items()},
            "conclusions": self.conclusions,
            "missing": self.missing,
        }


def ratio(qlora: float | None, lora: float | None) -> float | None:
    """QLoRA / LoRA, or None where either is missing or LoRA's value is zero."""
    if qlora is None or lora is None or lora == 0:
        return None
    return qlora / lora


def _group(experiments: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> stage -> the latest succeeded experiment of that stage."""
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sorted(experiments, key=lambda r: r.get("id") or 0):
        method = row.get("peft_method")
        if method not in METHODS or row.get("status", "succeeded").lower() != "succeeded":
            continue
        grouped.setdefault(method, {})[row["stage"]] = dict(row)
    return grouped


def _curves(
    grouped: dict[str, dict[str, dict[str, Any]]], metric_rows: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per-epoch series of the training stage, method -> metric -> [(epoch, value)]."""
    owner = {stages["train"]["id"]: method for method, stages in grouped.items() if "train" in stages}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in metric_rows:
        method = owner.get(row["experiment_id"])
        if method is None or row["name"] not in CURVES or row.get("epoch") is None:
            continue
        curves.setdefault(method, {}).setdefault(row["name"], []).append((int(row["epoch"]), float(row["value"])))
    for series in curves.values():
        for name, points in series.items():
            series[name] = sorted(dict(points).items())
    return curves


def _table(comparison: Comparison, rows: list[Row]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        lora = comparison.value("lora", row.stage, row.metric)
        qlora = comparison.value("qlora", row.stage, row.metric)
        if lora is None and qlora is None:
            continue
        table.append(
            {
                "stage": row.stage,
                "metric": row.metric,
                "label": row.label,
                "lora": lora,
                "qlora": qlora,
                "ratio": ratio(qlora, lora),
                "lower_is_better": row.lower_is_better,
            }
        )
    return table


def _pct(qlora: float, lora: float) -> str:
    return f"{abs(qlora - lora) / lora * 100:.0f}%" if lora else "n/a"


def _memory_conclusion(c: Comparison) -> str | None:
    gpu_l, gpu_q = c.value("lora", "train", "peak_gpu_mem_mb"), c.value("qlora", "train", "peak_gpu_mem_mb")
    if gpu_l is not None and gpu_q is not None:
        word = "less" if gpu_q < gpu_l else "MORE"
        return (
            f"QLoRA used {_pct(gpu_q, gpu_l)} {word} peak GPU memory than LoRA "
            f"({gpu_q:,.0f} MB against {gpu_l:,.0f} MB)."
        )
    w_l, w_q = c.value("lora", "train", "weight_memory_mb"), c.value("qlora", "train", "weight_memory_mb")
    if w_l is not None and w_q is not None:
        word = "less" if w_q < w_l else "MORE"
        return (
            f"No GPU in this run: QLoRA's weights took {_pct(w_q, w_l)} {word} memory than LoRA's "
            f"({w_q:,.1f} MB against {w_l:,.1f} MB); peak GPU memory was not measured."
        )
    return None


def _speed_conclusion(c: Comparison) -> str | None:
    s_l, s_q = c.value("lora", "train", "samples_per_s"), c.value("qlora", "train", "samples_per_s")
    if s_l is None or s_q is None:
        return None
    word = "faster" if s_q > s_l else "slower"
    return f"QLoRA trained {_pct(s_q, s_l)} {word} than LoRA ({s_q:,.1f} against {s_l:,.1f} samples/s)."


def _quality_conclusions(c: Comparison) -> list[str]:
    out = []
    r_l, r_q = c.value("lora", "train", "i2t_recall@1"), c.value("qlora", "train", "i2t_recall@1")
    if r_l is not None and r_q is not None:
        diff = r_q - r_l
        verdict = "lost accuracy" if diff < 0 else "matched or beat LoRA"
        out.append(f"Retrieval: QLoRA {verdict} on image-to-text recall@1 ({r_q:.3f} against {r_l:.3f}, {diff:+.3f}).")
    v_l, v_q = c.value("lora", "train", "best_val_loss"), c.value("qlora", "train", "best_val_loss")
    if v_l is not None and v_q is not None:
        word = "higher" if v_q > v_l else "lower or equal"
        out.append(f"Best validation loss: QLoRA {v_q:.4f}, LoRA {v_l:.4f} ({word} for QLoRA).")
    b_l, b_q = c.value("lora", "evaluate", "bleu4"), c.value("qlora", "evaluate", "bleu4")
    if b_l is not None and b_q is not None:
        out.append(f"Report generation: BLEU-4 {b_q:.3f} with the QLoRA encoder against {b_l:.3f} with LoRA's.")
    return out


def compare_methods(
    experiments: Iterable[Mapping[str, Any]],
    metric_rows: Iterable[Mapping[str, Any]],
    *,
    compare_job_id: int | None = None,
    expected_stages: Iterable[str] = ("train",),
    failures: Mapping[str, str] | None = None,
) -> Comparison:
    """Build the comparison from experiment rows ({id, job_id, stage, peft_method, status, metrics})
    and metric rows ({experiment_id, split, epoch, step, name, value})."""
    grouped = _group(experiments)
    comparison = Comparison(compare_job_id=compare_job_id, experiments=grouped)
    for method in METHODS:
        for stage in expected_stages:
            if stage not in grouped.get(method, {}):
                reason = (failures or {}).get(f"{method}:{stage}", "no succeeded experiment")
                comparison.missing.append(f"{method} {stage}: {reason}")
    comparison.table = _table(comparison, TRAIN_ROWS + GENERATION_ROWS)
    comparison.curves = _curves(grouped, metric_rows)
    for line in (_memory_conclusion(comparison), _speed_conclusion(comparison)):
        if line:
            comparison.conclusions.append(line)
    comparison.conclusions.extend(_quality_conclusions(comparison))
    if comparison.missing:
        comparison.conclusions.append("Incomplete comparison; missing: " + "; ".join(comparison.missing) + ".")
    return comparison
