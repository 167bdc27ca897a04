"""Per-image and per-study strings as columns: one UTF-8 buffer and its offsets, not one Python object each.

At MIMIC-CXR size a list of strings costs about 60 bytes an item before its characters: 377,110 image paths,
227,827 study ids and as many report texts held as Python objects are hundreds of megabytes in every process
that loads the data (the data stage, the trainer and its loader workers). A ``StringColumn`` holds its
values in one byte buffer with an offsets array (written to a file while a dataset is read, memory-mapped
when loaded: file pages the kernel can drop, not the process's own memory), and optionally a code per row
into those values (the images of a study share its id and its text, stored once). A string is made only
when it is read.

``StringColumnWriter`` builds one while a reader streams through a dataset: strings go to a file (or, without
one, to memory), a row that repeats the previous row's string shares its value.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 8192
"""Rows decoded per step when a column is iterated."""


class StringColumn(Sequence[str]):
    """Rows of strings: row ``i`` is value ``codes[i]`` (or value ``i`` without codes) of ``data``/``offsets``.

    Reads like a list (``len``, ``col[i]``, iteration); ``col[a:b]``, ``col[array]`` and ``take`` give a new
    column of those rows over the same buffer (nothing is copied but the codes)."""

    __slots__ = ("codes", "data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray, codes: np.ndarray | None = None):
        self.data = data
        """uint8: every value's UTF-8 bytes, one after another."""
        self.offsets = offsets
        """int64 [values + 1]: value j is data[offsets[j]:offsets[j + 1]]."""
        self.codes = codes
        """int32/int64 [rows]: each row's value; None when row i is value i."""

    # ---- building ----

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        """A column in memory of these strings (consecutive repeats share a value)."""
        writer = StringColumnWriter()
        for text in strings:
            writer.add(text)
        return writer.finish()

    @classmethod
    def from_values(cls, values: Sequence[str], codes: Sequence[int] | np.ndarray) -> StringColumn:
        """Rows that pick from a few values (projections, view positions) by code."""
        encoded = [value.encode() for value in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(value) for value in encoded], dtype=np.int64)
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        rows = np.asarray(codes)
        return cls(data, offsets, rows if rows.dtype.kind in "iu" else rows.astype(np.int32))

    # ---- reading ----

    @property
    def n_values(self) -> int:
        return len(self.offsets) - 1

    def value(self, j: int) -> str:
        start, end = int(self.offsets[j]), int(self.offsets[j + 1])
        return self.data[start:end].tobytes().decode()

    def row_codes(self) -> np.ndarray:
        """Each row's value index."""
        return self.codes if self.codes is not None else np.arange(self.n_values, dtype=_code_type(self.n_values))

    def __len__(self) -> int:
        return len(self.codes) if self.codes is not None else self.n_values

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            index = int(key)
            if index < 0:
                index += len(self)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} of a column of {len(self)}")
            return self.value(int(self.codes[index]) if self.codes is not None else index)
        return self.take(np.arange(len(self))[key] if isinstance(key, slice) else key)

    def take(self, rows: Sequence[int] | np.ndarray) -> StringColumn:
        """A column of these rows, in this order, over the same values."""
        picked = np.asarray(rows)
        picked = np.flatnonzero(picked) if picked.dtype == bool else picked.reshape(-1)
        if self.codes is not None:
            return StringColumn(self.data, self.offsets, self.codes[picked])
        return StringColumn(self.data, self.offsets, picked.astype(_code_type(self.n_values)))

    def __iter__(self) -> Iterator[str]:
        if self.codes is None:
            yield from self.values()
            return
        for start in range(0, len(self), _CHUNK):
            for code in self.codes[start : start + _CHUNK].tolist():
                yield self.value(code)

    def values(self) -> Iterator[str]:
        """Each distinct stored value once, in order (not each row)."""
        for j in range(self.n_values):
            yield self.value(j)

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StringColumn, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(text) for text in self[: min(3, len(self))])
        return f"StringColumn([{head}{', ...' if len(self) > 3 else ''}], rows={len(self)})"

    def rows_in(self, wanted: Iterable[str]) -> np.ndarray:
        """bool [rows]: whether each row's string is one of ``wanted`` (compared value by value, once each)."""
        wanted = set(wanted)
        hit = np.fromiter((value in wanted for value in self.values()), dtype=bool, count=self.n_values)
        return hit[self.row_codes()]

    def equal_ids(self) -> np.ndarray:
        """int64 [rows]: the same integer for rows with equal strings, numbered in order of first appearance.
        Values are compared by a 128-bit digest each (equal texts stored apart, e.g. two studies' identical
        reports, are found without a Python string per row)."""
        digests = np.empty((self.n_values, 2), dtype=np.uint64)
        for j in range(self.n_values):
            raw = self.data[int(self.offsets[j]) : int(self.offsets[j + 1])].tobytes()
            digests[j] = np.frombuffer(hashlib.blake2b(raw, digest_size=16).digest(), dtype=np.uint64)
        group = np.unique(digests, axis=0, return_inverse=True)[1].reshape(-1)[self.row_codes()]
        _, first_row, inverse = np.unique(group, return_index=True, return_inverse=True)
        rank = np.empty(len(first_row), dtype=np.int64)
        rank[np.argsort(first_row)] = np.arange(len(first_row))
        return rank[inverse.reshape(-1)]

    def sha256(self, separator: bytes = b"\n") -> str:
        """sha256 of the rows joined by ``separator`` (the digest of ``separator.join(rows)``), read in chunks."""
        digest = hashlib.sha256()
        for index, text in enumerate(self):
            if index:
                digest.update(separator)
            digest.update(text.encode())
        return digest.hexdigest()

    # ---- files ----

    def save(self, folder: Path, name: str) -> None:
        """Write the rows as ``name.data.npy``, ``name.offsets.npy`` and, where rows share values,
        ``name.codes.npy``: only the values the rows use (a split's rows of a whole dataset's column), copied
        run by run from the buffer (never read into memory whole)."""
        folder.mkdir(parents=True, exist_ok=True)
        used, inverse = distinct(self.row_codes())
        offsets = np.zeros(len(used) + 1, dtype=np.int64)
        for start in range(0, len(used), _CHUNK):  # the kept values' lengths, summed a chunk at a time
            part = used[start : start + _CHUNK]
            lengths = self.offsets[part + 1] - self.offsets[part]
            offsets[start + 1 : start + 1 + len(part)] = offsets[start] + np.cumsum(lengths)
        data_path = folder / f"{name}.data.npy"
        if offsets[-1] == 0:
            np.save(data_path, np.zeros(0, dtype=np.uint8))
        else:
            data = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.uint8, shape=(int(offsets[-1]),))
            for start in range(0, len(used), _CHUNK):
                self._copy_values(used[start : start + _CHUNK], data, int(offsets[start]))
            data.flush()
            del data
        np.save(folder / f"{name}.offsets.npy", offsets)
        codes_path = folder / f"{name}.codes.npy"
        if len(inverse) == len(used) and (inverse == np.arange(len(used), dtype=inverse.dtype)).all():  # row i: value i
            codes_path.unlink(missing_ok=True)
        else:
            np.save(codes_path, inverse)

    def _copy_values(self, values: np.ndarray, out: np.ndarray, at: int) -> None:
        """Copy the bytes of ``values`` (ascending) one after another into ``out`` from ``at``: values that lie
        next to each other in the buffer in one slice."""
        firsts = np.concatenate([[0], np.flatnonzero(np.diff(values) != 1) + 1])  # (unsigned: no prepend below 0)
        lasts = np.append(firsts[1:] - 1, len(values) - 1)
        starts, ends = self.offsets[values[firsts]], self.offsets[values[lasts] + 1]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            out[at : at + end - start] = self.data[start:end]
            at += end - start

    @classmethod
    def load(cls, folder: Path, name: str) -> StringColumn:
        """The column ``save`` wrote, memory-mapped."""
        codes_path = folder / f"{name}.codes.npy"
        return cls(
            _load(folder / f"{name}.data.npy"),
            _load(folder / f"{name}.offsets.npy"),
            _load(codes_path) if codes_path.is_file() else None,
        )


def _code_type(values: int) -> type:
    """The integer type of codes into ``values`` values (int32 halves a row's code below 2^31 values)."""
    return np.int32 if values < 2**31 else np.int64


def distinct(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``codes`` in ascending order, and each code's index among them (int32). Codes in
    ascending order (a split's rows of a study column, in the dataset's order) take one pass, no sort."""
    codes = np.asarray(codes)
    if len(codes) and (codes[1:] >= codes[:-1]).all():
        first = np.empty(len(codes), dtype=bool)
        first[0] = True
        np.not_equal(codes[1:], codes[:-1], out=first[1:])
        return codes[first], (np.cumsum(first, dtype=np.int32) - 1)
    used, inverse = np.unique(codes, return_inverse=True)
    return used, inverse.reshape(-1).astype(np.int32)


def _load(path: Path) -> np.ndarray:
    """An array file memory-mapped; an empty one (which cannot be mapped) read."""
    array_ = np.load(path, mmap_mode="r")
    return array_ if array_.size else np.load(path)


class ArrayWriter:
    """Appends numbers of one type (an ``array`` typecode: "q" int64, "i" int32, "b" int8, "B" uint8). With a
    path they go to that file a block at a time and ``finish`` memory-maps it, so a reader's per-image arrays
    are file pages, not the process's own memory; without one they stay in memory."""

    _BLOCK = 1 << 13

    def __init__(self, typecode: str, path: Path | None = None):
        self.dtype = np.dtype(typecode)
        self.path = path
        self._file = path.open("wb") if path is not None else None
        self._block = array(typecode)
        self._written = 0

    def append(self, value: int) -> None:
        self._block.append(value)
        if self._file is not None and len(self._block) >= self._BLOCK:
            self._spill()

    def extend(self, values: Iterable[int]) -> None:
        for value in values:
            self.append(value)

    def _spill(self) -> None:
        assert self._file is not None
        self._block.tofile(self._file)
        self._written += len(self._block)
        del self._block[:]

    def __len__(self) -> int:
        return self._written + len(self._block)

    def finish(self) -> np.ndarray:
        if self._file is None:
            return np.frombuffer(self._block, dtype=self.dtype)  # over the array's buffer: no copy
        self._spill()
        self._file.close()
        if not self._written:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r")


class StringColumnWriter:
    """Appends rows of strings; a row equal to the previous row shares its value (the images of a study are
    consecutive rows). With ``path`` the bytes, the offsets (8 bytes a value) and, once a row has shared a value,
    the codes (4 bytes a row) go to files beside it and the column is memory-mapped from them: nothing grows
    in this process's memory. Without a path they stay in memory."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._file = path.open("wb") if path is not None else None
        self._buffer = bytearray()
        self._size = 0
        self._offsets = ArrayWriter("q", self._beside(".offsets"))
        self._offsets.append(0)
        self._codes: ArrayWriter | None = None
        """int32 per row; None while every row has its own value (row i is value i)."""
        self._last: str | None = None

    def _beside(self, suffix: str) -> Path | None:
        return self.path.with_name(self.path.name + suffix) if self.path is not None else None

    def add(self, text: str) -> int:
        """Append a row; returns its value's index."""
        if text == self._last and len(self._offsets) > 1:
            code = len(self._offsets) - 2
            if self._codes is None:
                self._codes = ArrayWriter("i", self._beside(".codes"))
                self._codes.extend(range(code + 1))
        else:
            encoded = text.encode()
            if self._file is not None:
                self._file.write(encoded)
            else:
                self._buffer += encoded
            self._size += len(encoded)
            self._offsets.append(self._size)
            self._last = text
            code = len(self._offsets) - 2
        if self._codes is not None:
            self._codes.append(code)
        return code

    def __len__(self) -> int:
        return len(self._codes) if self._codes is not None else len(self._offsets) - 1

    def finish(self) -> StringColumn:
        if self._file is not None:
            self._file.close()
            data = np.memmap(self.path, dtype=np.uint8, mode="r") if self._size else np.zeros(0, dtype=np.uint8)
        else:
            data = np.frombuffer(bytes(self._buffer), dtype=np.uint8)
            self._buffer = bytearray()
        codes = self._codes.finish() if self._codes is not None else None
        column = StringColumn(data, self._offsets.finish(), codes)
        self._last = None
        return column
