"""ROUGE-1, ROUGE-2 and ROUGE-L F1 from Google's rouge-score, with Porter stemming."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rouge_score.rouge_scorer import RougeScorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer() -> RougeScorer:
    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Mean F1 over the pairs for each ROUGE type."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need equal, non-zero numbers of texts; got {len(references)} and {len(hypotheses)}")
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref, hyp in zip(references, hypotheses, strict=True):
        for name, score in _scorer().score(ref, hyp).items():
            totals[name] += score.fmeasure
    return {name: total / len(references) for name, total in totals.items()}


def sentence_rouge_l(reference: str, hypothesis: str) -> float:
    """ROUGE-L F1 of one study."""
    return float(_scorer().score(reference, hypothesis)["rougeL"].fmeasure)
