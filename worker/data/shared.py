"""Prepared data shared between hosts: an image cache decoded once, copied by every other host.

Decoding MIMIC-CXR's 377,110 JPEGs takes hours of CPU; every host of a multi-host deployment would spend them
again on the same bytes. The job runner may install a ``SharedStore`` for the length of a stage
(jobs/execution/artifacts.py: with an artifacts bucket, the store is the bucket's ``prepared/`` area). The
image cache (worker/data/cache.py) then looks there before decoding, and uploads what it decoded; nothing here
knows where the store is. Why a copied memory-mapped cache rather than a sharded streaming format:
docs/architecture.md, "Prepared data on several hosts".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol


class SharedStore(Protocol):
    def download(self, key: str, target: Path) -> bool:
        """Copy the object ``key`` to the file ``target`` (whole or not at all); False when there is none."""

    def upload(self, source: Path, key: str) -> None:
        """Store the file ``source`` as ``key`` (readers see the whole object or none)."""


_current: SharedStore | None = None


def current() -> SharedStore | None:
    return _current


@contextmanager
def sharing(store: SharedStore) -> Iterator[None]:
    global _current
    previous, _current = _current, store
    try:
        yield
    finally:
        _current = previous
