"""Some rows of a memory-mapped image cache, read only when asked for.

A split's images are a memory-mapped ``[N, S, S]`` array. Picking rows of it with a list of indices
(``images[rows]``) copies those rows into memory: at MIMIC-CXR size, the training split without a few
studies, or one image per study, is gigabytes. ``RowView`` keeps the indices instead and reads rows on
access, so a loader or an encoder that reads a batch at a time holds one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RowView:
    """Rows ``rows`` of ``base`` (an array or another view), in that order, read on access.

    ``view[i]`` is one row; ``view[a:b]``, or a list of positions, is a new in-memory array of those rows only;
    ``np.asarray(view)`` reads them all (for small splits and tests)."""

    def __init__(self, base: Any, rows: Sequence[int] | np.ndarray):
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        if isinstance(base, RowView):  # a view of a view reads the first base directly
            base, index = base.base, base.rows[index]
        self.base = base
        self.rows = index

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self.base[int(self.rows[key])])
        picked = self.rows[key]
        if picked.size and np.all(np.diff(picked) == 1):  # consecutive rows: one slice of the base
            return np.array(self.base[int(picked[0]) : int(picked[-1]) + 1])
        return np.asarray(self.base[picked])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def pick_rows(images: Any, rows: Sequence[int]) -> Any:
    """``images`` itself when ``rows`` is every row in order, else a ``RowView`` of them."""
    if len(rows) == len(images) and all(row == i for i, row in enumerate(rows)):
        return images
    return RowView(images, rows)
