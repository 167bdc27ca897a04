"""Image-text retrieval metrics that are honest about duplicate reports.

Many IU-Xray impressions are word-for-word identical, so "the" correct text of an image is ambiguous.
``i2t_recall@K`` counts a hit when any of the top-K retrieved texts equals the query study's own cleaned
text (and ``t2i_recall@K`` when any top-K image belongs to a study with that text). The ``_strict``
variants only accept the query's own index; ``_chance`` gives the expected recall of a random ranking on
the same split, so a reader can tell how far above chance a number is.
"""

from __future__ import annotations

import numpy as np
import torch

RECALL_KS = (1, 5, 10)


def _hits(ranked: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """ranked: [Q, K] gallery indices; relevant: [Q, G] bool. 1.0 for each query with a relevant hit, else 0.0."""
    return relevant.gather(1, ranked).any(dim=1).float()


def _hit_rate(ranked: torch.Tensor, relevant: torch.Tensor) -> float:
    """The fraction of queries with a relevant hit."""
    return _hits(ranked, relevant).mean().item()


def _chance_recall(n: int, same_text_counts: np.ndarray, k: int) -> float:
    """Expected recall@k of a uniformly random ranking: 1 - P(no relevant item among k draws).

    With m relevant items among n, P(miss) = prod_{j<k} (n - m - j) / (n - j)."""
    k = min(k, n)
    steps = np.arange(k)
    miss = np.prod(np.clip(n - same_text_counts[:, None] - steps, 0, None) / (n - steps), axis=1)
    return float(np.mean(1.0 - miss))


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str]) -> dict[str, float]:
    """Recall@1/5/10 in both directions (duplicate-aware, strict, and their chance levels) plus the mean
    cosine of matched pairs (``pos_cosine``) and of pairs whose texts differ (``neg_cosine``).

    image_embeds/text_embeds: [N, D] L2-normalised, row i of each belongs to study i with text texts[i].
    """
    n = len(texts)
    if image_embeds.shape[0] != n or text_embeds.shape[0] != n:
        raise ValueError(f"retrieval needs one image and one text embedding per text, got {n} texts")
    sims, same_text = _similarities(image_embeds, text_embeds, texts)
    ids = torch.tensor(text_ids(texts))
    own = torch.eye(n, dtype=torch.bool)
    counts = np.bincount(ids.numpy())[ids.numpy()]

    metrics: dict[str, float] = {}
    for direction, scores in (("i2t", sims), ("t2i", sims.t())):
        for k in RECALL_KS:
            top = scores.topk(min(k, n), dim=1).indices
            metrics[f"{direction}_recall@{k}"] = _hit_rate(top, same_text)
            metrics[f"{direction}_recall@{k}_strict"] = _hit_rate(top, own)
            metrics[f"{direction}_recall@{k}_chance"] = _chance_recall(n, counts, k)
            metrics[f"{direction}_recall@{k}_strict_chance"] = min(k, n) / n
    metrics["pos_cosine"] = sims.diagonal().mean().item()
    different = ~same_text
    metrics["neg_cosine"] = sims[different].mean().item() if different.any() else float("nan")
    return metrics


def hits_at_1(image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str]) -> dict[str, list[float]]:
    """Per query (row i: study i's image, and its text), 1.0 where the top-ranked item is relevant, as
    ``i2t_recall@1`` and ``t2i_recall@1`` count it: their means are those recalls. Kept per image so that two
    runs scored on the same validation images can be compared image by image (a paired bootstrap)."""
    sims, same_text = _similarities(image_embeds, text_embeds, texts)
    return {
        f"{direction}_hit@1": _hits(scores.topk(1, dim=1).indices, same_text).tolist()
        for direction, scores in (("i2t", sims), ("t2i", sims.t()))
    }


def _similarities(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[images, texts] cosine similarities, and which pairs share a text (the duplicate-aware relevance)."""
    ids = torch.tensor(text_ids(texts))
    return image_embeds.float() @ text_embeds.float().t(), ids[:, None] == ids[None, :]


def text_ids(texts: list[str]) -> list[int]:
    """The same integer for identical texts, in order of first appearance."""
    ids: dict[str, int] = {}
    return [ids.setdefault(t, len(ids)) for t in texts]

