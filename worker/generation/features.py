"""A split's image features in a `.npy` file: written a batch at a time, read a batch at a time.

train-full's vision tower is frozen, so each training and validation study's features are computed once and
reused by every epoch. At MIMIC-CXR size they do not fit comfortably in memory (150k studies x 768 floats is
460 MB pooled, several GB with ``generation.features=patches``), so they go to a file in the prepared data's
folder (``<prepared_dir>/features/``), beside the image caches they are computed from:

- the file's name holds a digest of everything its values depend on: the SigLIP checkpoint's bytes (a
  checkpoint rewritten in place gives another name, never stale features), the images (the split's image
  cache and the study rows chosen from it), the feature kind and region count, the device type SigLIP ran
  on and ``FORMAT``. Another run with the same checkpoint and data (a resume, a takeover on the same host,
  another generator setting) reads the file instead of running SigLIP again;
- it is written under a temporary name and renamed into place when whole, so ranks or hosts that share the
  folder never read a half-written file; each computes it if it is missing, and the last rename wins with
  the same values;
- writing appends each batch to the file (no mapping, so the process does not keep the written pages);
  training reads a batch of rows at a time through a memory map (``FeatureRows``), and the projector's
  normalisation statistics stream over the file in chunks.

The files can be deleted at any time; the next train-full writes them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.config import GenerationConfig
from worker.generation.encoder import feature_batches
from worker.siglip.checkpoint import FinetunedSiglip

logger = logging.getLogger(__name__)

FORMAT = 1
"""Part of every file's name: raise it when the features' computation changes, so older files are not read."""
DTYPE = np.dtype("<f4")
READ_BYTES = 8 << 20
"""Bytes of rows read at once when streaming over a file (statistics)."""


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def features_key(
    checkpoint_sha256: str, cache_name: str, filenames: Sequence[str], gen: GenerationConfig, device_type: str
) -> dict[str, Any]:
    """What a split's features depend on; ``filenames`` are the image of each study, in study order."""
    return {
        "format": FORMAT,
        "siglip_checkpoint_sha256": checkpoint_sha256,
        "image_cache": cache_name,
        "images_sha256": hashlib.sha256("\n".join(filenames).encode()).hexdigest(),
        "features": gen.features,
        "regions": gen.prefix_tokens if gen.features == "patches" else None,
        "device_type": device_type,
    }


def features_path(folder: Path, split: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"{split}-{key['features']}-{digest}.npy"


class FeatureRows:
    """A features file [N, ...] (fp32), memory-mapped on first use in each process (a pickled copy, say for
    a loader worker, carries the path only). Indexing returns a tensor copy of the rows asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        array = np.load(self.path, mmap_mode="r")  # reads the header only; rows are read when asked for
        if array.dtype != DTYPE or (array.ndim > 1 and np.isfortran(array)):
            raise ValueError(f"{self.path} is not a C-ordered float32 array")
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.offset: int = array.offset
        self._array: np.ndarray | None = array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._array[index]))

    def chunks(self, rows: int | None = None) -> Iterator[torch.Tensor]:
        """The rows in order, ``rows`` at a time (by default ``READ_BYTES`` of them), read from the file (not
        mapped: nothing stays resident)."""
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        rows = rows or max(1, READ_BYTES // (row_items * DTYPE.itemsize))
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            for start in range(0, len(self), rows):
                count = min(rows, len(self) - start)
                data = np.fromfile(file, dtype=DTYPE, count=count * row_items)
                yield torch.from_numpy(data.reshape(count, *self.shape[1:]))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "shape": self.shape, "_array": None}


def write_features(siglip: FinetunedSiglip, images: np.ndarray, gen: GenerationConfig, path: Path, label: str) -> None:
    """Compute the features of ``images`` a batch at a time and append each batch to ``path`` (a `.npy`
    file, renamed into place once whole)."""
    if len(images) == 0:
        raise ValueError(f"{label}: the split has no images to encode")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "wb") as file:
            rows = 0
            for chunk in feature_batches(siglip, images, gen, label):
                if rows == 0:  # the first batch gives the row shape
                    header = {"descr": np.lib.format.dtype_to_descr(DTYPE), "fortran_order": False,
                              "shape": (len(images), *chunk.shape[1:])}  # fmt: skip
                    np.lib.format.write_array_header_1_0(file, header)
                file.write(np.ascontiguousarray(chunk.numpy(), dtype=DTYPE).tobytes())
                rows += len(chunk)
            file.flush()
            os.fsync(file.fileno())
        if rows != len(images):
            raise RuntimeError(f"{label}: wrote {rows} rows for {len(images)} images")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_or_write_features(
    path: Path, images: np.ndarray, gen: GenerationConfig, encoder: Callable[[], FinetunedSiglip], label: str
) -> FeatureRows:
    """The features file at ``path`` if it is there with one row per image, else written first with the
    SigLIP that ``encoder`` returns (called only then)."""
    if path.is_file():
        try:
            found = FeatureRows(path)
        except (OSError, ValueError) as exc:
            logger.warning("%s: cannot read %s (%s); computing the features again", label, path, exc)
        else:
            if len(found) == len(images):
                logger.info("%s: reusing %s", label, path)
                return found
            logger.warning("%s: %s has %d rows for %d images; computing the features again",
                           label, path, len(found), len(images))  # fmt: skip
    write_features(encoder(), images, gen, path, label)
    return FeatureRows(path)
