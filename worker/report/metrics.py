"""The measures a report shows: which stage records each, its label with its unit, and its decimals.

One place decides how a number is printed, so a column never mixes "0.9", "1" and "0.9667".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """One line of the report: a metric of one stage, printed with fixed decimals."""

    stage: str
    metric: str
    label: str
    """What it is, with its unit in parentheses."""
    decimals: int
    lower_is_better: bool | None  # None: neither (e.g. total parameters)
    per_item: str | None = None
    """Key of a per-item value the stage wrote (per test study, per validation image) whose mean is this
    measure: two runs scored on the same items are compared item by item (a paired bootstrap)."""
    items: str = ""
    """What the per-item values are over, in words."""
    noise_band: float | None = None
    """Relative half-width (0.05: ±5%) within which two values from one run each are read as no difference,
    where there is no interval to decide (one seed, no per-item record); None: no stated band, so such a
    difference is "one seed, not a conclusion" whatever its size."""


# Timing from one run: on this project's 2-core CI box two timed steps of the same run and configuration differed
# by a median of 5.9% (0.3-26.6%, 30 configurations, bench/results/train_step.json), so a smaller difference
# between two runs says nothing. A quiet GPU box varies less; a loaded one far more, so outside the band a
# single run is still not a conclusion.
TIMING_NOISE_BAND = 0.05


def _fraction(stage: str, metric: str, name: str, decimals: int = 3, **per_item: str) -> Measure:
    return Measure(stage, metric, f"{name} (0-1)", decimals, False, **per_item)


def _recall(direction: str, name: str, k: int) -> Measure:
    # Recall@1 is the mean of per-image hits the train stage writes; recall@5/10 have no per-image record.
    per_item = {"per_item": f"{direction}_hit@1", "items": "validation images"} if k == 1 else {}
    return _fraction("train", f"{direction}_recall@{k}", f"{name} recall@{k}, validation", **per_item)


TRAIN_MEASURES = [
    Measure("train", "train_time_s", "Training time (s)", 1, True, noise_band=TIMING_NOISE_BAND),
    Measure("train", "samples_per_s", "Throughput (samples/s)", 1, False, noise_band=TIMING_NOISE_BAND),
    Measure("train", "peak_gpu_mem_mb", "Peak GPU memory, allocated (MB)", 1, True),
    Measure("train", "peak_gpu_reserved_mb", "Peak GPU memory, reserved (MB)", 1, True),
    Measure("train", "peak_ram_mb", "Peak RAM (MB)", 1, True),
    Measure("train", "weight_memory_mb", "Weight memory (MB)", 2, True),
    Measure("train", "trainable_params", "Trainable parameters (count)", 0, None),
    Measure("train", "total_params", "Total parameters (count)", 0, None),
    Measure("train", "best_val_loss", "Best validation loss (nats per pair)", 4, True),
    *(_recall(d, name, k) for d, name in (("i2t", "Image-to-text"), ("t2i", "Text-to-image")) for k in (1, 5, 10)),
]
GENERATION_MEASURES = [
    Measure("train-full", "train_time_s", "Report generation: training time (s)", 1, True,
            noise_band=TIMING_NOISE_BAND),
    Measure("train-full", "best_val_loss", "Report generation: best validation loss (nats per token)", 4, True),
    *(_fraction("evaluate", f"bleu{n}", f"BLEU-{n}, corpus") for n in range(1, 5)),
    _fraction("evaluate", "rouge1", "ROUGE-1 F1"),
    _fraction("evaluate", "rouge2", "ROUGE-2 F1"),
    _fraction("evaluate", "rougeL", "ROUGE-L F1"),
    _fraction("evaluate", "meteor", "METEOR"),
    Measure("evaluate", "coco_cider", "CIDEr, COCO toolkit (0-10)", 3, False),
    Measure("evaluate", "cosine_generated", "Image-text cosine, generated (-1 to 1)", 3, False),
    Measure("evaluate", "cosine_reference", "Image-text cosine, reference (-1 to 1)", 3, False),
    Measure("evaluate", "train_overlap", "Scored studies the model trained on (count, goal 0)", 0, True),
    *(
        _fraction("evaluate", f"study_{key}", f"{name}, mean per test study", per_item=key, items="test studies")
        for key, name in (("bleu4", "Sentence BLEU-4"), ("rougeL", "ROUGE-L F1"))
    ),
    # Only with eval.clinical (worker.textmetrics.clinical).
    _fraction("evaluate", "clinical_f1_micro", "CheXbert label F1, micro, 14 observations"),
    _fraction("evaluate", "clinical_f1_micro_5", "CheXbert label F1, micro, 5 observations"),
]
MEASURES = TRAIN_MEASURES + GENERATION_MEASURES
# Names people type for a measure whose recorded name differs.
ALIASES = {"val_loss": "best_val_loss"}


def find_measure(name: str) -> Measure:
    """The measure called `name` (the first stage's, for names two stages share); KeyError listing the names."""
    name = ALIASES.get(name, name)
    for measure in MEASURES:
        if measure.metric == name:
            return measure
    allowed = sorted({m.metric for m in MEASURES} | set(ALIASES))
    raise KeyError(f"unknown metric '{name}'; allowed: {', '.join(allowed)}")


def fmt(value: float | None, decimals: int) -> str:
    """Fixed decimals, thousands separated; an em dash for a missing value."""
    return "—" if value is None else f"{value:,.{decimals}f}"


def signed(value: float, decimals: int) -> str:
    """'+0.050' or '−0.050' (a true minus sign); no sign when the value rounds to zero."""
    if fmt(abs(value), decimals) == fmt(0.0, decimals):
        return fmt(0.0, decimals)
    return ("+" if value > 0 else "−") + fmt(abs(value), decimals)
