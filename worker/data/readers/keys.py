"""Ids as 8-byte keys, and the row of each study read so far, held in arrays rather than dicts of strings.

A reader that streams a large dataset (MIMIC-CXR's 227,827 studies, CheXpert Plus's 187,711) must find the row
of a study it has seen before without a Python string and two objects per study: a dict of 227,827 study ids
takes 27 MB, the arrays of ``StudyRows`` 2.6 MB. An id that is a plain decimal number (MIMIC's study and subject
ids) is its own key; any other id is its 8-byte blake2b digest with the top bit set, so that a number and a
digest are never the same key. Two ids share a digest with a chance of about 1e-8 among 400,000 ids (they would
then count as one study).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator

import numpy as np

_DIGEST_BIT = 1 << 63


def digest(text: str) -> int:
    """A string's 8-byte blake2b digest as an unsigned integer."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def id_key(value: str) -> int:
    """An id as an unsigned 64-bit key: a plain decimal number is its value, any other id (a leading zero, a
    letter) its digest with the top bit set."""
    if value.isdigit() and value.isascii() and len(value) <= 18 and (value[0] != "0" or len(value) == 1):
        return int(value)
    return digest(value) | _DIGEST_BIT


def key_array(values: Iterable[int], count: int) -> np.ndarray:
    return np.fromiter(values, dtype=np.uint64, count=count)


def lookup(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Each wanted key's index in the sorted uint64 array ``keys`` (the first of equals), -1 where absent."""
    if not len(keys):
        return np.full(len(wanted), -1, dtype=np.int64)
    index = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[index] == wanted, index, -1)


def distinct(keys: array) -> int:
    """How many distinct values an ``array("Q")`` holds (it is sorted in place)."""
    values = np.frombuffer(keys, dtype=np.uint64)
    values.sort()
    return int(np.count_nonzero(values[1:] != values[:-1])) + bool(len(values))


class StudyRows:
    """The row of each study read so far, by key: a sorted array of keys and one of rows (12 bytes a study) for
    the earlier batches, and a dict for the batch being read, inserted into the arrays by ``merge`` after each
    batch. A reader looks a batch's keys up with ``rows_of``, ``add``s each study it has not read yet, then
    ``merge``s."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int32)
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys) + len(self._recent)

    def rows_of(self, keys: np.ndarray) -> Iterator[tuple[int, int]]:
        """Each key with its study's row, -1 for a study not read yet: the earlier batches' rows are looked up
        at once, this batch's as the loop reaches them, so that a study ``add``ed by one of the batch's rows is
        found by its later ones."""
        earlier = self._earlier(keys)
        for key, row in zip(keys.tolist(), earlier, strict=True):
            yield key, (row if row >= 0 else self._recent.get(key, -1))

    def add(self, key: int, row: int) -> int:
        """Record the row of a study first read in this batch; returns the row."""
        self._recent[key] = row
        return row

    def _earlier(self, keys: np.ndarray) -> list[int]:
        """Each key's row among the earlier batches' studies, -1 where it is not one of them."""
        if not len(self.keys):
            return [-1] * len(keys)
        index = lookup(self.keys, keys)
        return np.where(index >= 0, self.rows[np.maximum(index, 0)], -1).tolist()

    def merge(self) -> None:
        """Move the batch's studies into the arrays (an insertion, not a sort of the whole: one array's copy at
        a time beside the arrays)."""
        keys = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        rows = np.fromiter(self._recent.values(), dtype=np.int32, count=len(self._recent))
        self._recent.clear()
        order = np.argsort(keys)
        keys, rows = keys[order], rows[order]
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.rows = np.insert(self.rows, at, rows)
