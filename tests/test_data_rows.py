"""RowView: some rows of a memory-mapped cache, read on access, equal to the copy fancy indexing made."""

from __future__ import annotations

import numpy as np
import pytest

from worker.data.rows import RowView, pick_rows


@pytest.fixture
def cache(tmp_path) -> np.ndarray:
    array = np.lib.format.open_memmap(tmp_path / "c.npy", mode="w+", dtype=np.uint8, shape=(12, 3, 3))
    array[:] = np.arange(12 * 9, dtype=np.uint8).reshape(12, 3, 3)
    array.flush()
    return np.load(tmp_path / "c.npy", mmap_mode="r")


def test_a_view_reads_the_rows_fancy_indexing_would_copy(cache):
    rows = [0, 2, 3, 4, 7, 11]
    view = RowView(cache, rows)
    copy = cache[rows]
    assert len(view) == 6 and view.shape == copy.shape and view.dtype == np.uint8 and view.ndim == 3
    assert np.array_equal(np.asarray(view), copy)
    for i in range(len(rows)):
        assert np.array_equal(view[i], copy[i])
    assert np.array_equal(view[-1], copy[-1])
    for start, stop in ((0, 2), (1, 4), (4, 6), (5, 99)):  # a run of consecutive rows, and a gap
        assert np.array_equal(view[start:stop], copy[start:stop])
    assert np.array_equal(view[[5, 0]], copy[[5, 0]])


def test_a_view_of_a_view_reads_the_cache_directly(cache):
    inner = RowView(cache, [1, 3, 5, 7, 9])
    outer = RowView(inner, [4, 0, 2])
    assert outer.base is cache and outer.rows.tolist() == [9, 1, 5]
    assert np.array_equal(np.asarray(outer), cache[[9, 1, 5]])


def test_every_row_in_order_is_the_cache_itself(cache):
    assert pick_rows(cache, list(range(12))) is cache
    assert isinstance(pick_rows(cache, [0, 1]), RowView)


def test_a_split_without_some_studies_copies_nothing_out_of_the_cache(cache):
    from worker.data.prepared import SplitData

    uids = [f"s{i // 2}" for i in range(12)]  # two images per study
    split = SplitData("test", uids, [f"{i}.png" for i in range(12)], ["Frontal"] * 12, uids, cache)
    rest = split.without({"s1", "s4"})
    assert isinstance(rest.images, RowView) and rest.images.base is cache
    kept = [i for i in range(12) if uids[i] not in {"s1", "s4"}]
    assert rest.uids == [uids[i] for i in kept]
    assert np.array_equal(np.asarray(rest.images), cache[kept])
    assert split.without({"nope"}) is split
