"""The seed's metrics from NLTK: corpus BLEU-1..4 with smoothing and METEOR with WordNet synonyms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu
from nltk.translate.meteor_score import meteor_score as _nltk_meteor

from worker.textmetrics.tokenize import tokenize, words
from worker.textmetrics.wordnet import load_wordnet

BLEU_WEIGHTS = {
    "bleu1": (1.0, 0.0, 0.0, 0.0),
    "bleu2": (0.5, 0.5, 0.0, 0.0),
    "bleu3": (1 / 3, 1 / 3, 1 / 3, 0.0),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}
# Chen & Cherry's method 1: an n-gram order with no match counts epsilon instead of zeroing the score.
_SMOOTHING = SmoothingFunction().method1


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} generated texts; pass one per study")
    if not references:
        raise ValueError("no texts to score; pass at least one reference/generated pair")


def bleu_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (one reference per hypothesis) with smoothing method 1."""
    _check_pairs(references, hypotheses)
    refs = [[tokenize(r)] for r in references]
    hyps = [tokenize(h) for h in hypotheses]
    values = corpus_bleu(refs, hyps, weights=list(BLEU_WEIGHTS.values()), smoothing_function=_SMOOTHING)
    return {name: float(v) for name, v in zip(BLEU_WEIGHTS, values, strict=True)}


def sentence_bleu4(reference: str, hypothesis: str) -> float:
    """Sentence BLEU of one study, up to 4-grams, made sensible for short texts.

    Plain smoothed BLEU-4 gives an exact two-word match 0.316 (its missing 3- and 4-grams count as
    epsilon) and a lone "." a positive score. So: words only (punctuation carries no content, and a "."
    alone scores 0); a hypothesis of n < 4 words is scored on its 1..n-grams with uniform weights (NLTK's
    auto_reweigh), so any exact match is 1.0; smoothing method 1 for an order with no match; BLEU's
    brevity penalty as usual.
    """
    ref, hyp = words(reference), words(hypothesis)
    if not ref or not hyp:
        return 0.0
    return float(sentence_bleu([ref], hyp, smoothing_function=_SMOOTHING, auto_reweigh=True))


def meteor_score(references: Sequence[str], hypotheses: Sequence[str], *, nltk_data_dir: Path) -> float:
    """Mean sentence METEOR (exact, stem and WordNet-synonym matches).

    Raises SystemDependencyMissing when WordNet is not installed: a METEOR without synonyms is a
    different metric and must not be reported under this name.
    """
    _check_pairs(references, hypotheses)
    wordnet = load_wordnet(Path(nltk_data_dir))
    scores = [
        _nltk_meteor([tokenize(r)], tokenize(h), wordnet=wordnet)
        for r, h in zip(references, hypotheses, strict=True)
    ]
    return float(sum(scores) / len(scores))
