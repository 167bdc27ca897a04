"""Retrieval metrics: duplicate-aware and strict recall, chance levels, cosine summaries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from worker.siglip.retrieval import _chance_recall, hits_at_1, retrieval_metrics, text_ids


def _onehot(rows: list[int], dim: int = 8) -> torch.Tensor:
    return torch.eye(dim)[rows]


def test_perfect_embeddings_hit_everything():
    texts = ["a", "b", "c", "d"]
    emb = _onehot([0, 1, 2, 3])
    metrics = retrieval_metrics(emb, emb, texts)
    assert metrics["i2t_recall@1"] == metrics["i2t_recall@1_strict"] == 1.0
    assert metrics["t2i_recall@1"] == 1.0
    assert metrics["pos_cosine"] == pytest.approx(1.0)
    assert metrics["neg_cosine"] == pytest.approx(0.0)


def test_identical_texts_count_as_the_same_answer():
    # Images 0 and 1 have the same report; image 0's best text is row 1 (same words, other study).
    texts = ["no acute disease", "no acute disease", "effusion"]
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text_emb = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    metrics = retrieval_metrics(images, text_emb, texts)
    assert metrics["i2t_recall@1"] == 1.0
    assert metrics["i2t_recall@1_strict"] == pytest.approx(1 / 3)


def test_chance_matches_brute_force_over_all_rankings():
    texts = ["x", "x", "y", "z"]
    n, k = len(texts), 2
    hits = []
    for ranking in itertools.permutations(range(n)):
        hits.extend(any(texts[j] == texts[q] for j in ranking[:k]) for q in range(n))
    expected = sum(hits) / len(hits)
    metrics = retrieval_metrics(torch.randn(n, 4), torch.randn(n, 4), texts)
    assert metrics["i2t_recall@5_chance"] == 1.0  # k larger than the gallery
    # recall@K for K=1: P(hit) = m/n averaged over queries
    assert metrics["i2t_recall@1_chance"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4 + 1 / 4) / 4)
    assert metrics["i2t_recall@1_strict_chance"] == pytest.approx(1 / 4)
    # recall@2 from the closed form equals the brute force over every ranking
    counts = np.array([2, 2, 1, 1])
    assert _chance_recall(n, counts, k) == pytest.approx(expected)
    assert not math.isnan(metrics["neg_cosine"])


def test_text_ids_share_an_id_for_equal_texts():
    assert text_ids(["a", "b", "a", "c"]) == [0, 1, 0, 2]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one image and one text"):
        retrieval_metrics(torch.randn(3, 2), torch.randn(2, 2), ["a", "b", "c"])


def test_per_image_hits_average_to_recall_at_1():
    texts = ["no acute disease", "no acute disease", "effusion", "nodule", "effusion", "cardiomegaly"]
    generator = torch.Generator().manual_seed(3)
    images, text_emb = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    hits = hits_at_1(images, text_emb, texts)
    metrics = retrieval_metrics(images, text_emb, texts)
    for direction in ("i2t", "t2i"):
        assert set(hits[f"{direction}_hit@1"]) <= {0.0, 1.0} and len(hits[f"{direction}_hit@1"]) == 6
        assert np.mean(hits[f"{direction}_hit@1"]) == pytest.approx(metrics[f"{direction}_recall@1"])
    # Image 0's best text is row 1: a hit by the duplicate-aware rule.
    assert hits_at_1(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]), ["a"])["i2t_hit@1"] == [1.0]
