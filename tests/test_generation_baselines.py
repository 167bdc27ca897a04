"""The report baselines' two choices, against hand counts and a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.generation.baselines import most_frequent_text, nearest_texts


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["a b", "c", "c", "d", "a b", "c"], "c"),  # c three times, a b twice
        (["x", "y", "y", "x"], "x"),  # a tie: the text seen first
        (["only"], "only"),
    ],
)
def test_the_template_is_the_most_frequent_text(texts, expected):
    assert most_frequent_text(texts) == expected


def test_no_training_text_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one training text"):
        most_frequent_text([])


def test_the_nearest_text_is_the_one_of_the_highest_cosine():
    rng = np.random.default_rng(0)
    gallery = F.normalize(torch.from_numpy(rng.normal(size=(40, 8))).float(), dim=-1)
    queries = F.normalize(torch.from_numpy(rng.normal(size=(15, 8))).float(), dim=-1)
    texts = [f"report {i % 7}" for i in range(40)]
    expected = []
    for q in queries.tolist():
        cosines = [sum(a * b for a, b in zip(q, g, strict=True)) for g in gallery.tolist()]
        expected.append(texts[max(range(len(cosines)), key=cosines.__getitem__)])
    assert nearest_texts(queries, gallery, texts) == expected


def test_a_gallery_that_does_not_match_its_texts_is_refused():
    with pytest.raises(ValueError, match="3 gallery embeddings for 2 texts"):
        nearest_texts(torch.eye(3), torch.eye(3), ["a", "b"])


@pytest.mark.parametrize("budget", [1, 9, 10**9])
def test_a_chunked_search_picks_the_same_text_as_the_whole_matrix_ties_included(budget):
    """Small-integer embeddings (exact cosines) with repeated gallery rows: argmax over the whole matrix gives
    the first of the tied rows, and so must a search a few queries at a time."""
    rng = np.random.default_rng(3)
    gallery = torch.from_numpy(rng.integers(-1, 2, size=(30, 3))).float()
    gallery[15:] = gallery[:15].clone()  # every best row has a tie later in the gallery
    queries = torch.from_numpy(rng.integers(-1, 2, size=(17, 3))).float()
    texts = [f"report {i}" for i in range(30)]
    expected = [texts[i] for i in (queries @ gallery.t()).argmax(dim=1).tolist()]
    assert all(int(t.split()[1]) < 15 for t in expected)  # the first of each tie
    assert nearest_texts(queries, gallery, texts, budget=budget) == expected
