"""Every metric at once, and the per-study scores written next to each prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.metric_registry import per_study_metrics
from worker.textmetrics.coco import coco_scores_of_each
from worker.textmetrics.deps import require_java
from worker.textmetrics.nltk_metrics import bleu_scores, meteor_score
from worker.textmetrics.protocol import ScoringProtocol, scoring_texts
from worker.textmetrics.rouge import rouge_scores
from worker.textmetrics.wordnet import load_wordnet


def check_system_dependencies(nltk_data_dir: Path) -> None:
    """Fail fast, before any generation work, when METEOR could not be computed (WordNet or Java missing)."""
    load_wordnet(Path(nltk_data_dir))
    require_java()


def all_metrics(
    references: Sequence[str], hypotheses: Sequence[str], *, nltk_data_dir: Path, protocol: ScoringProtocol = "native"
) -> dict[str, float]:
    """bleu1..4, rouge1/2/L, meteor and the coco_* metrics of the generated texts, on the protocol's text."""
    return all_metrics_of_each(references, {"": hypotheses}, nltk_data_dir=nltk_data_dir, protocol=protocol)[""]


def all_metrics_of_each(
    references: Sequence[str],
    hypotheses: Mapping[str, Sequence[str]],
    *,
    nltk_data_dir: Path,
    protocol: ScoringProtocol = "native",
) -> dict[str, dict[str, float]]:
    """all_metrics of every named set of hypotheses (a model and its baselines) against the same references,
    with one METEOR JVM for all of them (see coco_scores_of_each)."""
    coco = coco_scores_of_each(references, hypotheses, protocol=protocol)
    references = scoring_texts(references, protocol)
    scores = {}
    for name, texts in hypotheses.items():
        texts = scoring_texts(texts, protocol)
        scores[name] = {
            **bleu_scores(references, texts),
            **rouge_scores(references, texts),
            "meteor": meteor_score(references, texts, nltk_data_dir=nltk_data_dir),
            **coco[name],
        }
    return scores


def per_item_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, protocol: ScoringProtocol = "native"
) -> list[dict[str, float]]:
    """Every per-study metric of the registry (worker.metric_registry: sentence BLEU, see sentence_bleu4, and
    ROUGE-L F1 ...) of each pair, on the protocol's text, under its per-item key: for ranking studies, for the
    predictions file and for paired intervals."""
    scorers = [(metric.per_item, metric.scorer()) for metric in per_study_metrics()]
    references, hypotheses = scoring_texts(references, protocol), scoring_texts(hypotheses, protocol)
    return [
        {key: float(score(r, h)) for key, score in scorers}
        for r, h in zip(references, hypotheses, strict=True)
    ]
