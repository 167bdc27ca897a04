"""Retrieval metrics: duplicate-aware and strict recall, chance levels, cosine summaries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from worker.data.columns import StringColumn
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
    assert text_ids(["a", "b", "a", "c"]).tolist() == [0, 1, 0, 2]
    # A column compares its stored values: equal texts stored apart (two studies' identical reports) share an id.
    column = StringColumn.from_strings(["x", "x", "a", "b", "a", "x"])
    assert column.n_values == 5
    assert text_ids(column).tolist() == [0, 0, 1, 2, 1, 0]
    assert text_ids(column.take([3, 5, 0])).tolist() == [0, 1, 1]


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


def _tied_embeddings(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Small-integer embeddings: every cosine is exact in fp32 whatever the order of the sums, so a chunked
    computation must give the very same scores, and many of them tie (repeated rows, repeated texts)."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(-2, 3, size=(n, 4))).float()
    texts_emb = torch.from_numpy(rng.integers(-2, 3, size=(n, 4))).float()
    images[n // 2 :] = images[: n - n // 2].clone()  # the second half repeats the first: tied scores
    texts = [f"report {i % 5}" for i in range(n)]  # five texts, each shared by several studies
    return images, texts_emb, texts


def _direct_metrics(image: torch.Tensor, text: torch.Tensor, texts: list[str]) -> dict[str, float]:
    """The whole [N, N] matrix at once, as retrieval was computed before it was chunked."""
    n = len(texts)
    ids = torch.tensor(text_ids(texts))
    sims, same_text = image @ text.t(), ids[:, None] == ids[None, :]
    own = torch.eye(n, dtype=torch.bool)
    out: dict[str, float] = {}
    for direction, scores in (("i2t", sims), ("t2i", sims.t())):
        for k in (1, 5, 10):
            top = scores.topk(min(k, n), dim=1).indices
            out[f"{direction}_recall@{k}"] = same_text.gather(1, top).any(dim=1).float().mean().item()
            out[f"{direction}_recall@{k}_strict"] = own.gather(1, top).any(dim=1).float().mean().item()
        out[f"{direction}_hit@1"] = same_text.gather(1, scores.topk(1, dim=1).indices).any(dim=1).float().tolist()
    out["pos_cosine"] = sims.diagonal().mean().item()
    out["neg_cosine"] = sims[~same_text].mean().item()
    return out


@pytest.mark.parametrize("budget", [1, 7, 40, 10**9])  # one query per chunk ... the whole matrix in one
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_retrieval_equals_the_whole_matrix_ties_included(budget, seed):
    image, text, texts = _tied_embeddings(23, seed)
    expected = _direct_metrics(image, text, texts)
    metrics = retrieval_metrics(image, text, texts, budget=budget)
    for name, value in metrics.items():
        if name in expected:
            assert value == pytest.approx(expected[name], rel=1e-6, abs=1e-7), name
    hits = hits_at_1(image, text, texts, budget=budget)
    assert hits["i2t_hit@1"] == expected["i2t_hit@1"] and hits["t2i_hit@1"] == expected["t2i_hit@1"]


def test_chunks_are_whole_rows_of_the_similarity_matrix():
    from worker.siglip.retrieval import similarity_chunks

    image, text, _ = _tied_embeddings(23, 0)
    chunks = list(similarity_chunks(image, text, budget=50))  # 50 entries of rows of 23: two rows a chunk
    assert [rows.stop - rows.start for rows, _ in chunks] == [2] * 11 + [1]
    assert torch.equal(torch.cat([scores for _, scores in chunks]), image @ text.t())
