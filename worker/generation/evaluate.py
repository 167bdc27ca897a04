"""The `evaluate` stage: generate for every study of a split, compute the text metrics, and score the
baselines (worker.generation.baselines) on the same studies with the same metrics, under both protocols:
``eval.protocol``'s numbers unprefixed, the other protocol's under its name (``r2gen_bleu4``,
``r2gen_template_rougeL``; ``native_...`` when eval.protocol is r2gen). Only the scoring is repeated, never
the generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.config import RunConfig
from worker.generation.baselines import baseline_texts
from worker.generation.predict import Predictions, predict
from worker.metric_registry import per_study_metrics
from worker.recorder import Recorder
from worker.result import StageResult
from worker.textmetrics import all_metrics_of_each, check_system_dependencies, per_item_scores
from worker.textmetrics.clinical import clinical_scores, load_labeler
from worker.textmetrics.protocol import ScoringProtocol, other_protocol
from worker.training.device import resolve_accelerator, torch_device
from worker.training.runs import output_dir

STAGE = "evaluate"
MODEL = "model"  # the generator's texts, beside the baselines' (whose names are metric prefixes)


def evaluate(config: RunConfig, recorder: Recorder, *, checkpoint: str, split: str = "test") -> StageResult:
    """bleu1..4, rouge1/2/L, meteor, coco_* metrics, the means of the per-study metrics (``study_bleu4`` ...),
    SigLIP-space cosines, timing; the same text metrics of every baseline under its prefix (``template_bleu4``,
    ``nn_finetuned_rougeL``, ``nn_base_meteor`` ...); predictions (with each baseline's text and the per-study
    values of every per-study metric of worker.metric_registry) as JSONL.

    The unprefixed text metrics score the texts of config.eval.protocol (native, or R2Gen's cleaning); the same
    metrics of the model and every baseline under the other protocol carry its name as a prefix
    (``r2gen_bleu4``, ``r2gen_template_bleu4``), in the predictions file too.

    With eval.clinical, CheXbert label F1 (``clinical_f1_micro`` ..., worker.textmetrics.clinical) of the model
    and of every baseline (``template_clinical_f1_micro`` ...).

    Raises SystemDependencyMissing (from worker.textmetrics) when WordNet or Java is missing, or with
    eval.clinical the f1chexbert package or its weights, before any generation work."""
    from worker.data import load_prepared

    nltk_data = config.var_path("nltk_data")
    check_system_dependencies(nltk_data)
    device = torch_device(resolve_accelerator(config.train))
    labeler = load_labeler(device) if config.eval.clinical else None  # fails here, before any generation
    predictions = predict(config, checkpoint, split)
    references, protocol = predictions.references, config.eval.protocol
    # The baselines read the training studies the checkpoint saw, whatever data is scored.
    baselines = baseline_texts(load_prepared(predictions.plan.trained).split("train"), predictions.images,
                               predictions.siglip_checkpoint, device)  # fmt: skip
    texts = {MODEL: predictions.generated, **baselines}
    per_item: list[dict[str, Any]] = [{} for _ in references]
    metrics: dict[str, Any] = {}
    for prefix, scoring in (("", protocol), (f"{other_protocol(protocol)}_", other_protocol(protocol))):
        metrics |= _score(references, texts, scoring, prefix, nltk_data, per_item)
    if labeler is not None:  # labels read from the texts as written: no protocol applies
        for name, written in texts.items():
            head = "" if name == MODEL else f"{name}_"
            metrics |= {head + key: value for key, value in clinical_scores(labeler, references, written).items()}
    count = len(predictions.generated)
    metrics |= {
        "cosine_generated": _mean(s["cosine_generated"] for s in predictions.scores),
        "cosine_reference": _mean(s["cosine_reference"] for s in predictions.scores),
        "num_samples": count,
        "generation_time_s": predictions.generation_time_s,
        "reports_per_s": count / predictions.generation_time_s if predictions.generation_time_s else 0.0,
        "empty_generations": sum(1 for text in predictions.generated if not text),
        "distinct_generations": len(set(predictions.generated)),
        **scored_data_metrics(predictions),
    }
    for name, baseline in baselines.items():
        metrics[f"{name}_distinct_generations"] = len(set(baseline))
        for row, text in zip(per_item, baseline, strict=True):
            row[f"{name}_text"] = text
    recorder.log_metrics({k: float(v) for k, v in metrics.items()}, split=split)
    path = output_dir(config, STAGE, checkpoint) / f"predictions-{split}.jsonl"
    write_predictions(predictions, path, per_item)
    return StageResult(stage=STAGE, metrics=metrics, artifacts={"predictions": str(path)})


def scored_data_metrics(predictions: Predictions) -> dict[str, float]:
    """Which split was scored and how it relates to the training split: ``train_overlap`` (scored studies the
    checkpoint trained on; the goal is 0), ``train_overlap_excluded`` (studies left out for that reason when
    another dataset is scored), ``split_seed`` and whether another dataset than the checkpoint's was scored."""
    plan = predictions.plan
    return {
        "train_overlap": predictions.train_overlap,
        "train_overlap_excluded": predictions.train_excluded,
        "split_seed": plan.scored.data.split_seed,
        "other_dataset": int(plan.other_dataset),
    }


def _score(
    references: list[str], texts: dict[str, list[str]], protocol: ScoringProtocol, prefix: str, nltk_data: Path,
    per_item: list[dict[str, Any]],
) -> dict[str, float]:
    """Every text metric of each named text set under one protocol, named ``prefix`` + (``name_`` for a
    baseline) + metric; their per-study values go into per_item under the same prefixes, and each per-study
    metric's mean is recorded under its name."""
    metrics = {}
    scored = all_metrics_of_each(references, texts, nltk_data_dir=nltk_data, protocol=protocol)
    for name, values in scored.items():
        head = prefix if name == MODEL else f"{prefix}{name}_"
        metrics |= {head + metric: value for metric, value in values.items()}
        studies = per_item_scores(references, texts[name], protocol=protocol)
        for row, scores in zip(per_item, studies, strict=True):
            row |= {head + key: value for key, value in scores.items()}
        # The same mean as the report takes of the per-item values (sum over the studies in order, then divide).
        metrics |= {head + m.name: _mean(s[m.per_item] for s in studies) for m in per_study_metrics()}
    return metrics


def write_predictions(predictions: Predictions, path: Path, extra: list[dict[str, Any]]) -> Path:
    """One JSON object per study: its id (under IU-Xray's name, ``uid``, which readers of earlier files expect),
    reference, generated, the per-study scores and two cosines (predict), and the study's ``extra`` fields (the
    per-study scores of every text set under every protocol, the baselines' texts). A key in both keeps its
    place from the first and its value from ``extra``: the model's own scores, computed again, are equal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for study_id, reference, generated, scores, more in zip(
            predictions.studies.study_ids, predictions.references, predictions.generated, predictions.scores, extra,
            strict=True,
        ):
            record = {"uid": study_id, "reference": reference, "generated": generated, **scores, **more}
            out.write(json.dumps(record) + "\n")
    return path


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
