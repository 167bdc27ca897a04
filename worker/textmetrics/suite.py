"""Every metric at once, and the per-study scores written next to each prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.textmetrics.coco import coco_scores_of_each
from worker.textmetrics.deps import require_java
from worker.textmetrics.nltk_metrics import bleu_scores, meteor_score, sentence_bleu4
from worker.textmetrics.protocol import Protocol, scoring_texts
from worker.textmetrics.rouge import rouge_scores, sentence_rouge_l
from worker.textmetrics.wordnet import load_wordnet


def check_system_dependencies(nltk_data_dir: Path) -> None:
    """Fail fast, before any generation work, when METEOR could not be computed (WordNet or Java missing)."""
    load_wordnet(Path(nltk_data_dir))
    require_java()


def all_metrics(
    references: Sequence[str], hypotheses: Sequence[str], *, nltk_data_dir: Path, protocol: Protocol = "native"
) -> dict[str, float]:
    """bleu1..4, rouge1/2/L, meteor and the coco_* metrics of the generated texts, on the protocol's text."""
    return all_metrics_of_each(references, {"": hypotheses}, nltk_data_dir=nltk_data_dir, protocol=protocol)[""]


def all_metrics_of_each(
    references: Sequence[str],
    hypotheses: Mapping[str, Sequence[str]],
    *,
    nltk_data_dir: Path,
    protocol: Protocol = "native",
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


def per_sample_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, protocol: Protocol = "native"
) -> list[dict[str, float]]:
    """Sentence BLEU (see sentence_bleu4) and ROUGE-L F1 of each pair, on the protocol's text, for ranking
    studies and for the predictions file."""
    references, hypotheses = scoring_texts(references, protocol), scoring_texts(hypotheses, protocol)
    return [
        {"bleu4": sentence_bleu4(r, h), "rougeL": sentence_rouge_l(r, h)}
        for r, h in zip(references, hypotheses, strict=True)
    ]
