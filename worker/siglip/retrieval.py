"""Image-text retrieval metrics that are honest about duplicate reports.

Many IU-Xray impressions are word-for-word identical, so "the" correct text of an image is ambiguous.
``i2t_recall@K`` counts a hit when any of the top-K retrieved texts equals the query study's own cleaned
text (and ``t2i_recall@K`` when any top-K image belongs to a study with that text). The ``_strict``
variants only accept the query's own index; ``_chance`` gives the expected recall of a random ranking on
the same split, so a reader can tell how far above chance a number is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from worker.data.columns import StringColumn
from worker.progress import progress

RECALL_KS = (1, 5, 10)


SIMILARITY_BUDGET = 1 << 20
"""Entries of the similarity matrix computed at once (4 MB in fp32, with the chunk's same-text mask and top-k
about 6 MB): at 30k validation images the whole [N, N] matrix would be 3.6 GB, and its duplicate-text mask
as much again. Smaller chunks cost no extra arithmetic (the same rows are multiplied), only more, smaller
matmuls: recall and hits@1 over 21,056 pairs took 8.0 s on 2 CPU cores against 7.0 s at 2^22 entries, and a
MIMIC-CXR-size training's peak memory fell from 594 to 483 MB (the chunks' freed memory is kept by the
allocator, so the chunk size sets how much the retrieval adds)."""


def similarity_chunks(
    queries: torch.Tensor, gallery: torch.Tensor, budget: int = SIMILARITY_BUDGET
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, queries[rows] @ gallery.T)`` for consecutive chunks of query rows, each about ``budget``
    entries: every row of the [Q, G] cosine matrix, whole, without the matrix ever being held. A row's top-k
    or argmax is therefore the same as over the full matrix, ties included."""
    queries, gallery = queries.float(), gallery.float()
    step = max(1, budget // max(1, gallery.shape[0]))
    for start in range(0, queries.shape[0], step):
        rows = slice(start, min(start + step, queries.shape[0]))
        yield rows, queries[rows] @ gallery.t()


def _chance_recall(n: int, same_text_counts: np.ndarray, k: int) -> float:
    """Expected recall@k of a uniformly random ranking: 1 - P(no relevant item among k draws).

    With m relevant items among n, P(miss) = prod_{j<k} (n - m - j) / (n - j)."""
    k = min(k, n)
    steps = np.arange(k)
    miss = np.prod(np.clip(n - same_text_counts[:, None] - steps, 0, None) / (n - steps), axis=1)
    return float(np.mean(1.0 - miss))


def _check(image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str]) -> torch.Tensor:
    n = len(texts)
    if image_embeds.shape[0] != n or text_embeds.shape[0] != n:
        raise ValueError(f"retrieval needs one image and one text embedding per text, got {n} texts")
    return torch.tensor(text_ids(texts), dtype=torch.long)


def retrieval_metrics(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str], *, budget: int = SIMILARITY_BUDGET
) -> dict[str, float]:
    """Recall@1/5/10 in both directions (duplicate-aware, strict, and their chance levels) plus the mean
    cosine of matched pairs (``pos_cosine``) and of pairs whose texts differ (``neg_cosine``).

    image_embeds/text_embeds: [N, D] L2-normalised, row i of each belongs to study i with text texts[i].
    Computed a chunk of queries at a time (``similarity_chunks``): memory grows with N, not N x N.
    """
    ids = _check(image_embeds, text_embeds, texts)
    n = len(texts)
    counts = np.bincount(ids.numpy())[ids.numpy()]
    hits = {f"{d}_recall@{k}{kind}": 0.0 for d in ("i2t", "t2i") for k in RECALL_KS for kind in ("", "_strict")}
    positives = torch.empty(n)
    negative_sum, negative_count = 0.0, 0
    directions = (("i2t", image_embeds, text_embeds), ("t2i", text_embeds, image_embeds))
    with progress(f"retrieval over {n:,} image-text pairs", 2 * n, "queries") as advance:
        for direction, queries, gallery in directions:
            for rows, scores in similarity_chunks(queries, gallery, budget):
                query = torch.arange(rows.start, rows.stop)
                for k in RECALL_KS:
                    top = scores.topk(min(k, n), dim=1).indices
                    hits[f"{direction}_recall@{k}"] += (ids[top] == ids[query, None]).any(dim=1).sum().item()
                    hits[f"{direction}_recall@{k}_strict"] += (top == query[:, None]).any(dim=1).sum().item()
                if direction == "i2t":
                    positives[rows] = scores[torch.arange(len(query)), query]
                    # All pairs less those that share a text (few): no copy of the chunk's scores.
                    same = ids[query, None] == ids[None, :]
                    # Summed per row in fp32, the rows in fp64: no fp64 copy of the chunk.
                    total = scores.sum(dim=1).double().sum() - scores[same].double().sum()
                    negative_sum += total.item()
                    negative_count += same.numel() - int(same.sum())
                advance(len(query))

    metrics: dict[str, float] = {}
    for direction in ("i2t", "t2i"):
        for k in RECALL_KS:
            metrics[f"{direction}_recall@{k}"] = hits[f"{direction}_recall@{k}"] / n
            metrics[f"{direction}_recall@{k}_strict"] = hits[f"{direction}_recall@{k}_strict"] / n
            metrics[f"{direction}_recall@{k}_chance"] = _chance_recall(n, counts, k)
            metrics[f"{direction}_recall@{k}_strict_chance"] = min(k, n) / n
    metrics["pos_cosine"] = positives.mean().item()
    metrics["neg_cosine"] = negative_sum / negative_count if negative_count else float("nan")
    return metrics


def hits_at_1(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, texts: list[str], *, budget: int = SIMILARITY_BUDGET
) -> dict[str, list[float]]:
    """Per query (row i: study i's image, and its text), 1.0 where the top-ranked item is relevant, as
    ``i2t_recall@1`` and ``t2i_recall@1`` count it: their means are those recalls. Kept per image so that two
    runs scored on the same validation images can be compared image by image (a paired bootstrap)."""
    ids = _check(image_embeds, text_embeds, texts)
    out: dict[str, list[float]] = {}
    for direction, queries, gallery in (("i2t", image_embeds, text_embeds), ("t2i", text_embeds, image_embeds)):
        hits: list[float] = []
        for rows, scores in similarity_chunks(queries, gallery, budget):
            top = scores.topk(1, dim=1).indices
            hits += (ids[top] == ids[rows, None]).any(dim=1).float().tolist()
        out[f"{direction}_hit@1"] = hits
    return out


def text_ids(texts: Sequence[str]) -> np.ndarray:
    """int64: the same integer for identical texts, in order of first appearance (a column compares its stored
    values, not one string per row: worker.data.columns.StringColumn.equal_ids)."""
    if isinstance(texts, StringColumn):
        return texts.equal_ids()
    ids: dict[str, int] = {}
    return np.fromiter((ids.setdefault(t, len(ids)) for t in texts), dtype=np.int64, count=len(texts))
