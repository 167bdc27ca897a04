"""The `evaluate` stage: generate for every study of a split, compute the text metrics, and score the
baselines (worker.generation.baselines) on the same studies with the same metrics and protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.config import RunConfig
from worker.generation.baselines import baseline_texts
from worker.generation.predict import Predictions, predict
from worker.recorder import Recorder
from worker.result import StageResult
from worker.textmetrics import all_metrics_of_each, check_system_dependencies, per_sample_scores
from worker.training.device import resolve_accelerator, torch_device
from worker.training.runs import output_dir

STAGE = "evaluate"
MODEL = "model"  # the generator's texts, beside the baselines' (whose names are metric prefixes)


def evaluate(config: RunConfig, recorder: Recorder, *, checkpoint: str, split: str = "test") -> StageResult:
    """bleu1..4, rouge1/2/L, meteor, coco_* metrics, SigLIP-space cosines, timing; the same text metrics of
    every baseline under its prefix (``template_bleu4``, ``nn_finetuned_rougeL``, ``nn_base_meteor`` ...);
    predictions (with each baseline's text and per-study scores) as JSONL.

    The text metrics score the texts of config.eval.protocol (native, or R2Gen's cleaning).

    Raises SystemDependencyMissing (from worker.textmetrics) when WordNet or Java is missing, before any
    generation work."""
    from worker.data import load_prepared

    nltk_data = config.var_path("nltk_data")
    check_system_dependencies(nltk_data)
    predictions = predict(config, checkpoint, split)
    references, protocol = predictions.references, config.eval.protocol
    device = torch_device(resolve_accelerator(config.train))
    baselines = baseline_texts(load_prepared(config).split("train"), predictions.images,
                               predictions.siglip_checkpoint, device)  # fmt: skip
    scored = all_metrics_of_each(
        references, {MODEL: predictions.generated, **baselines}, nltk_data_dir=nltk_data, protocol=protocol
    )
    metrics: dict[str, Any] = scored.pop(MODEL)
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
    per_study: list[dict[str, Any]] = [{} for _ in references]
    for name, texts in baselines.items():
        metrics |= {f"{name}_{metric}": value for metric, value in scored[name].items()}
        metrics[f"{name}_distinct_generations"] = len(set(texts))
        for row, text, scores in zip(per_study, texts, per_sample_scores(references, texts, protocol=protocol),
                                     strict=True):  # fmt: skip
            row |= {f"{name}_text": text, **{f"{name}_{key}": value for key, value in scores.items()}}
    recorder.log_metrics({k: float(v) for k, v in metrics.items()}, split=split)
    path = output_dir(config, STAGE, checkpoint) / f"predictions-{split}.jsonl"
    write_predictions(predictions, path, per_study)
    return StageResult(stage=STAGE, metrics=metrics, artifacts={"predictions": str(path)})


def write_predictions(predictions: Predictions, path: Path, extra: list[dict[str, Any]]) -> Path:
    """One JSON object per study: uid, reference, generated, bleu4, rougeL, the two cosines, and the study's
    ``extra`` fields (the baselines' texts and scores)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for uid, reference, generated, scores, more in zip(
            predictions.studies.uids, predictions.references, predictions.generated, predictions.scores, extra,
            strict=True,
        ):
            record = {"uid": uid, "reference": reference, "generated": generated, **scores, **more}
            out.write(json.dumps(record) + "\n")
    return path


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
