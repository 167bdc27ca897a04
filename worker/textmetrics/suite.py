"""Every metric at once, and the per-study scores written next to each prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from worker.textmetrics.coco import coco_scores
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
    references, hypotheses = scoring_texts(references, protocol), scoring_texts(hypotheses, protocol)
    return {
        **bleu_scores(references, hypotheses),
        **rouge_scores(references, hypotheses),
        "meteor": meteor_score(references, hypotheses, nltk_data_dir=nltk_data_dir),
        **coco_scores(references, hypotheses, protocol=protocol),
    }


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
