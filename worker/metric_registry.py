"""Every metric the report shows or compares, declared once: which stage records it, how it is printed, whether it
has a value per item, whether it is scored under each protocol and for each baseline, whether it decides "beats
the baseline", and what optional weights it needs.

The evaluate stage's per-study scoring and per-study rows, the report's measures and baseline tables, the
per-item values the report reads back, the `jobs results` columns and docs/metrics.md are all derived from
``METRICS``. Adding a metric is two changes: its scoring function, and its entry here (docs/metrics.md).

Kept free of heavy imports (no torch, no NLTK): the `jobs` side reads it to know which per-item values to load.
A scoring function is named by its import path and imported when evaluate first scores with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["train", "train-full", "evaluate"]
ScoringProtocol = Literal["native", "r2gen"]
"""How texts are prepared before scoring (worker.textmetrics.protocol): this project's tokenization, or R2Gen's
cleaning and the COCO toolkit on its space-split text."""
PROTOCOLS: tuple[ScoringProtocol, ...] = ("native", "r2gen")
PairScore = Callable[[str, str], float]
"""A per-study scoring function: (reference, generated) -> value, on the texts of one scoring protocol."""


@dataclass(frozen=True)
class Metric:
    """One metric of one stage."""

    name: str
    """Its recorded name: the model's value under the run's own scoring protocol (eval.protocol)."""
    stage: Stage
    label: str
    """What it is, with its unit in parentheses."""
    decimals: int
    lower_is_better: bool | None  # None: neither (e.g. total parameters)
    per_item: str | None = None
    """Key of the value per item (test study, validation image) that the stage writes to its per-item file;
    the metric is the mean of those values where no corpus value was recorded, and two runs scored on the same
    items are compared item by item (a paired bootstrap). None: a corpus metric, compared over seeds."""
    items: str = ""
    """What the per-item values are over, in words."""
    score: str | PairScore | None = None
    """Evaluate's per-study scoring function ("module:function", or the function itself): evaluate writes
    its value for every study (model and baselines, each protocol) under ``per_item``, and records the mean
    under ``name``. None where another function computes the metric (corpus metrics, retrieval)."""
    protocols: bool = False
    """Scored under each scoring protocol: eval.protocol's value under ``name``, the other protocol's under
    the protocol's name as a prefix (``r2gen_bleu4``)."""
    baselines: bool = False
    """Scored for each baseline of its stage too, under the baseline's prefix (``template_bleu4``)."""
    compared: bool = False
    """A row of the report's baseline table: the model against each baseline (needs ``baselines``)."""
    decides: bool = False
    """Its paired interval against a baseline decides "beats the baseline" (every deciding one must exclude 0)."""
    baseline_rank: int = 0
    """Orders the baseline table's rows after the deciding ones (equal ranks keep this file's order)."""
    needs: str | None = None
    """The optional setting (and downloaded weights) without which it is not recorded."""
    shown: bool = True
    """A line of the report's measures table; False: recorded only (`jobs results --json`, `jobs metrics`)."""
    noise_band: float | None = None
    """Relative half-width (0.05: ±5%) within which two values from one run each are read as no difference,
    where there is no interval to decide (one seed, no per-item record); None: no stated band, so such a
    difference is "one seed, not a conclusion" whatever its size."""
    column: str | None = None
    """Its column header in `jobs results` (None: not a column; every metric is in `--json`)."""
    short: str | None = None
    """Its name in running text (the report's method notes); None: its label without the unit."""

    @property
    def short_name(self) -> str:
        return self.short or self.label.rsplit(" (", 1)[0]

    def scorer(self) -> PairScore:
        """The per-study scoring function, imported on first use."""
        if self.score is None:
            raise ValueError(f"metric {self.name} has no per-study scoring function")
        if callable(self.score):
            return self.score
        module, _, function = self.score.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Baseline:
    """A reference a stage scores beside the model, on the same items, under its prefix."""

    prefix: str
    label: str
    short: str
    """Its column header."""
    stage: Stage
    column: str | None = None
    """Its name before a metric's header in `jobs results` (None: no column)."""


# Timing from one run: on this project's 2-core CI box two timed steps of the same run and configuration differed
# by a median of 5.9% (0.3-26.6%, 30 configurations, bench/results/train_step.json), so a smaller difference
# between two runs says nothing. A quiet GPU box varies less; a loaded one far more, so outside the band a
# single run is still not a conclusion.
TIMING_NOISE_BAND = 0.05
PER_STUDY = {"items": "test studies", "protocols": True, "baselines": True, "compared": True}
"""What every per-study text metric of the evaluate stage declares besides its own fields."""
TEXT = {"protocols": True, "baselines": True}
"""What every text metric of the evaluate stage declares: the model and each baseline, under each protocol."""


def _fraction(stage: Stage, name: str, label: str, decimals: int = 3, **more) -> Metric:
    return Metric(name, stage, f"{label} (0-1)", decimals, False, **more)


def _recall(direction: str, label: str, k: int, column: str | None) -> Metric:
    # Recall@1 is the mean of per-image hits the train stage writes; recall@5/10 have no per-image record.
    per_item = {"per_item": f"{direction}_hit@1", "items": "validation images"} if k == 1 else {}
    return _fraction("train", f"{direction}_recall@{k}", f"{label} recall@{k}, validation", baselines=True,
                     compared=True, decides=k == 1, baseline_rank=k, column=column if k == 1 else None,
                     **per_item)  # fmt: skip


TRAIN = [
    Metric("train_time_s", "train", "Training time (s)", 1, True, noise_band=TIMING_NOISE_BAND, column="time s"),
    Metric("samples_per_s", "train", "Throughput (samples/s)", 1, False, noise_band=TIMING_NOISE_BAND,
           column="samples/s"),
    Metric("peak_gpu_mem_mb", "train", "Peak GPU memory, allocated (MB)", 1, True, column="GPU MB"),
    Metric("peak_gpu_reserved_mb", "train", "Peak GPU memory, reserved (MB)", 1, True),
    Metric("peak_ram_mb", "train", "Peak RAM (MB)", 1, True, column="RAM MB"),
    Metric("weight_memory_mb", "train", "Weight memory (MB)", 2, True),
    Metric("trainable_params", "train", "Trainable parameters (count)", 0, None, column="trainable"),
    Metric("total_params", "train", "Total parameters (count)", 0, None),
    Metric("best_val_loss", "train", "Best validation loss (nats per pair)", 4, True, column="best val loss"),
    *(_recall("i2t", "Image-to-text", k, "i2t R@1") for k in (1, 5, 10)),
    *(_recall("t2i", "Text-to-image", k, "t2i R@1") for k in (1, 5, 10)),
]
GENERATION = [
    Metric("train_time_s", "train-full", "Report generation: training time (s)", 1, True,
           noise_band=TIMING_NOISE_BAND),
    Metric("best_val_loss", "train-full", "Report generation: best validation loss (nats per token)", 4, True),
    *(_fraction("evaluate", f"bleu{n}", f"BLEU-{n}, corpus", compared=n == 4, **TEXT) for n in range(1, 5)),
    _fraction("evaluate", "rouge1", "ROUGE-1 F1", **TEXT),
    _fraction("evaluate", "rouge2", "ROUGE-2 F1", **TEXT),
    _fraction("evaluate", "rougeL", "ROUGE-L F1", compared=True, column="ROUGE-L", **TEXT),
    _fraction("evaluate", "meteor", "METEOR", compared=True, **TEXT),
    Metric("coco_cider", "evaluate", "CIDEr, COCO toolkit (0-10)", 3, False, compared=True, **TEXT),
    Metric("cosine_generated", "evaluate", "Image-text cosine, generated (-1 to 1)", 3, False),
    Metric("cosine_reference", "evaluate", "Image-text cosine, reference (-1 to 1)", 3, False),
    Metric("train_overlap", "evaluate", "Scored studies the model trained on (count, goal 0)", 0, True),
    # Per study: the values a paired interval against a baseline is computed from. Written to the predictions
    # file under their historical keys (bleu4, rougeL), beside the corpus metrics of the same names.
    _fraction("evaluate", "study_bleu4", "Sentence BLEU-4, mean per test study", per_item="bleu4", decides=True,
              score="worker.textmetrics.nltk_metrics:sentence_bleu4", short="BLEU-4", **PER_STUDY),
    _fraction("evaluate", "study_rougeL", "ROUGE-L F1, mean per test study", per_item="rougeL", decides=True,
              score="worker.textmetrics.rouge:sentence_rouge_l", short="ROUGE-L", **PER_STUDY),
    _fraction("evaluate", "clinical_f1_micro", "CheXbert label F1, micro, 14 observations", baselines=True,
              compared=True, needs="eval.clinical"),
    _fraction("evaluate", "clinical_f1_micro_5", "CheXbert label F1, micro, 5 observations", baselines=True,
              compared=True, needs="eval.clinical"),
]
# Recorded by evaluate, not lines of the report: the COCO toolkit's versions of the NLTK/rouge-score metrics, the
# other CheXbert aggregates, and the run's counts and timing.
RECORDED = [
    *(_fraction("evaluate", f"coco_bleu{n}", f"BLEU-{n}, COCO toolkit", shown=False, **TEXT) for n in range(1, 5)),
    _fraction("evaluate", "coco_meteor", "METEOR, COCO toolkit", shown=False, **TEXT),
    _fraction("evaluate", "coco_rougeL", "ROUGE-L F1, COCO toolkit", shown=False, **TEXT),
    *(_fraction("evaluate", name, label, baselines=True, needs="eval.clinical", shown=False) for name, label in (
        ("clinical_f1_macro", "CheXbert label F1, macro, 14 observations"),
        ("clinical_f1_macro_5", "CheXbert label F1, macro, 5 observations"),
        ("clinical_accuracy_5", "CheXbert label accuracy, 5 observations"),
    )),
    Metric("num_samples", "evaluate", "Test studies (count)", 0, None, shown=False),
    # Which data was scored (docs/evaluation-integrity.md): the checkpoint's split seed, whether another dataset
    # than the checkpoint's was scored (1) or not (0), and how many of its studies were left out as training ones.
    Metric("split_seed", "evaluate", "Split seed (the checkpoint's)", 0, None, shown=False),
    Metric("other_dataset", "evaluate", "Another dataset than the checkpoint's (1 or 0)", 0, None, shown=False),
    Metric("train_overlap_excluded", "evaluate", "Training studies left out of another dataset (count)", 0, None,
           shown=False),
    Metric("generation_time_s", "evaluate", "Generation time (s)", 1, True, shown=False),
    Metric("reports_per_s", "evaluate", "Generation throughput (reports/s)", 1, False, shown=False),
    Metric("empty_generations", "evaluate", "Empty generations (count)", 0, True, shown=False),
    Metric("distinct_generations", "evaluate", "Distinct generations (count)", 0, None, shown=False,
           baselines=True),
]  # fmt: skip
METRICS: list[Metric] = [*TRAIN, *GENERATION, *RECORDED]
"""Every metric, in the order of the report's measures table."""

BASELINES = (
    Baseline("base_", "base SigLIP (zero-shot)", "Base SigLIP", "train", column="base"),
    Baseline("template_", "template baseline (most frequent training text)", "Template", "evaluate",
             column="template"),
    Baseline("nn_finetuned_", "nearest-neighbour baseline (fine-tuned SigLIP)", "NN, fine-tuned", "evaluate",
             column="NN"),
    Baseline("nn_base_", "nearest-neighbour baseline (base SigLIP)", "NN, base", "evaluate"),
)  # fmt: skip
ALIASES = {"val_loss": "best_val_loss"}
"""Names people type for a measure whose recorded name differs."""


def of_stage(stage: str, metrics: Iterable[Metric] | None = None) -> list[Metric]:
    return [m for m in (METRICS if metrics is None else metrics) if m.stage == stage]


def shown() -> list[Metric]:
    """The report's measures, in table order."""
    return [m for m in METRICS if m.shown]


def find(name: str) -> Metric:
    """The shown metric called `name` (the first stage's, for names two stages share); KeyError listing the
    names otherwise."""
    name = ALIASES.get(name, name)
    for metric in shown():
        if metric.name == name:
            return metric
    allowed = sorted({m.name for m in shown()} | set(ALIASES))
    raise KeyError(f"unknown metric '{name}'; allowed: {', '.join(allowed)}")


def per_study_metrics() -> list[Metric]:
    """The evaluate stage's metrics with a per-study scoring function, in order."""
    return [m for m in of_stage("evaluate") if m.score is not None]


def compared_with_baseline(baseline: Baseline) -> list[Metric]:
    """The measures a baseline's table compares, the deciding ones first (see Metric.baseline_rank)."""
    metrics = [m for m in of_stage(baseline.stage, shown()) if m.compared]
    return sorted(metrics, key=lambda m: (not m.decides, m.baseline_rank))


def deciding(stage: str) -> list[Metric]:
    """The measures whose intervals decide whether the model beats a baseline of `stage`, in order."""
    return [m for m in of_stage(stage, shown()) if m.decides]


def protocol_prefixes() -> tuple[str, ...]:
    """The prefixes a protocol-scored metric is recorded under: none (eval.protocol) and each protocol's name."""
    return ("", *(f"{protocol}_" for protocol in PROTOCOLS))


def recorded_names(metric: Metric) -> list[str]:
    """Every name `metric` may be recorded under: for each protocol (where it is scored under each) and for
    the model and each baseline of its stage (where it is scored for them)."""
    protocols = protocol_prefixes() if metric.protocols else ("",)
    owners = ("", *(b.prefix for b in BASELINES if b.stage == metric.stage)) if metric.baselines else ("",)
    return [protocol + owner + metric.name for protocol in protocols for owner in owners]


def per_item_keys(stage: str) -> tuple[str, ...]:
    """Every per-item key the stage's per-item file may hold, under every prefix it is written with."""
    keys = []
    for metric in of_stage(stage):
        if metric.per_item:
            keys += recorded_names(Metric(metric.per_item, metric.stage, "", 0, None, protocols=metric.protocols,
                                          baselines=metric.baselines))  # fmt: skip
    return tuple(dict.fromkeys(keys))


def unregistered(stage: str, names: Iterable[str]) -> list[str]:
    """The names among `names` that no metric of `stage` is recorded under."""
    known = {name for metric in of_stage(stage) for name in recorded_names(metric)}
    return [name for name in names if name not in known]


def result_columns() -> list[tuple[str, str]]:
    """(header, recorded name) of the metrics `jobs results` shows as columns, in order: each metric with a
    column, then its baselines' values (what the model is measured against). Every metric is in `--json`."""
    columns = {}
    for metric in METRICS:
        if metric.column is None:
            continue
        columns.setdefault(metric.name, metric.column)
        if metric.compared:
            for baseline in BASELINES:
                if baseline.stage == metric.stage and baseline.column:
                    columns.setdefault(baseline.prefix + metric.name, f"{baseline.column} {metric.column}")
    return [(header, name) for name, header in columns.items()]


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _compared(metric: Metric) -> str:
    return "decides" if metric.decides else _yes(metric.compared)


def markdown_table() -> str:
    """The registry as the Markdown table of docs/metrics.md (`python -m worker.metric_registry` prints it)."""
    lines = [
        "| Name | Stage | Label (unit) | Decimals | Better | Per item | Each protocol | Each baseline "
        "| Baseline table | Needs |",
        "|---|---|---|---:|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        better = {True: "lower", False: "higher", None: ""}[m.lower_is_better]
        per_item = f"`{m.per_item}`" if m.per_item else ""
        lines.append(
            f"| `{m.name}` | {m.stage} | {m.label}{'' if m.shown else ' (recorded only)'} | {m.decimals} | {better} | "
            f"{per_item} | {_yes(m.protocols)} | {_yes(m.baselines)} | {_compared(m)} | {m.needs or ''} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
