"""The `evaluate` stage: generate for every study of a split and compute the text metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.config import RunConfig
from worker.generation.predict import Predictions, predict
from worker.recorder import Recorder
from worker.result import StageResult
from worker.textmetrics import all_metrics, check_system_dependencies
from worker.training.runs import output_dir

STAGE = "evaluate"


def evaluate(config: RunConfig, recorder: Recorder, *, checkpoint: str, split: str = "test") -> StageResult:
    """bleu1..4, rouge1/2/L, meteor, coco_* metrics, SigLIP-space cosines, timing; predictions as JSONL.

    The text metrics score the texts of config.eval.protocol (native, or R2Gen's cleaning).

    Raises SystemDependencyMissing (from worker.textmetrics) when WordNet or Java is missing, before any
    generation work."""
    nltk_data = config.var_path("nltk_data")
    check_system_dependencies(nltk_data)
    predictions = predict(config, checkpoint, split)
    metrics: dict[str, Any] = all_metrics(
        predictions.references, predictions.generated, nltk_data_dir=nltk_data, protocol=config.eval.protocol
    )
    count = len(predictions.generated)
    metrics |= {
        "cosine_generated": _mean(s["cosine_generated"] for s in predictions.scores),
        "cosine_reference": _mean(s["cosine_reference"] for s in predictions.scores),
        "num_samples": count,
        "generation_time_s": predictions.generation_time_s,
        "reports_per_s": count / predictions.generation_time_s if predictions.generation_time_s else 0.0,
        "empty_generations": sum(1 for text in predictions.generated if not text),
        "distinct_generations": len(set(predictions.generated)),
    }
    recorder.log_metrics({k: float(v) for k, v in metrics.items()}, split=split)
    path = write_predictions(predictions, output_dir(config, STAGE, checkpoint) / f"predictions-{split}.jsonl")
    return StageResult(stage=STAGE, metrics=metrics, artifacts={"predictions": str(path)})


def write_predictions(predictions: Predictions, path: Path) -> Path:
    """One JSON object per study: uid, reference, generated, bleu4, rougeL (and the two cosines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for uid, reference, generated, scores in zip(
            predictions.studies.uids, predictions.references, predictions.generated, predictions.scores, strict=True
        ):
            out.write(json.dumps({"uid": uid, "reference": reference, "generated": generated, **scores}) + "\n")
    return path


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
