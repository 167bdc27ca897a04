"""The decoded-image cache: one memory-mappable ``.npy`` per split, projection and resolution.

Decoding a full-size IU-Xray PNG costs tens of milliseconds, more than a GPU step per image, so each
image is decoded and resized once, by a process pool over all cores, and stored as uint8
``[N, size, size]``. Later runs and every epoch memory-map the file. A JSON sidecar records which of the
requested files it holds (the digest of their list, and the undecodable ones left out) and how each was
stored; the cache is reused only when the sidecar's file list is the requested one. With a shared store
(worker/data/shared.py), a cache another host decoded is copied instead of decoded again.

Both files are written under temporary names and renamed into place, so an interrupted build is never
mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from worker.data import shared
from worker.data.images import DecodeKind, decode_image
from worker.progress import progress

logger = logging.getLogger(__name__)

POOL_MIN_IMAGES = 256
"""Below this many images one process decodes faster than a pool starts."""


@dataclass(frozen=True)
class CachedImages:
    path: Path
    images: np.ndarray
    """uint8 [len(kept), size, size], memory-mapped."""
    kept: np.ndarray
    """int32: indices into the requested files of the images that decoded, in order."""
    kinds: dict[DecodeKind, int]
    """How many of the requested files were stored in each way (including "undecodable")."""
    built: bool
    """True when this call decoded the images, False when it read an existing cache."""
    downloaded: bool = False
    """True when this call copied the cache from the shared store (worker/data/shared.py) instead of decoding."""


def _joined_digest(algorithm: str, filenames: Sequence[str]) -> str:
    """The hex digest of the names joined by newlines, hashed name by name (the list is never joined whole)."""
    digest = hashlib.new(algorithm)
    for index, name in enumerate(filenames):
        digest.update(f"\n{name}".encode() if index else name.encode())
    return digest.hexdigest()


def cache_name(split: str, projection: str, size: int, filenames: Sequence[str]) -> str:
    """Readable prefix plus a digest of the file list: a changed split or filter never reads a stale cache."""
    return f"{split}-{projection}-{size}px-{_joined_digest('sha1', filenames)[:10]}"


def _files_digest(filenames: Sequence[str]) -> str:
    return "sha256:" + _joined_digest("sha256", filenames)


def _sidecar(size: int, filenames: Sequence[str], kept: np.ndarray, kinds: dict[str, int]) -> dict[str, Any]:
    """What the JSON beside the array records. The file list by its digest and count, and the files left out
    (not the kept ones): a few hundred bytes for MIMIC-CXR's 377,110 files instead of megabytes of names."""
    dropped = np.flatnonzero(~_mask(len(filenames), kept)).tolist()
    return {"size": size, "files": len(filenames), "files_sha256": _files_digest(filenames), "dropped": dropped,
            "kinds": kinds}  # fmt: skip


def _kept_if_matching(meta: dict[str, Any], filenames: Sequence[str], size: int) -> np.ndarray | None:
    """The kept indices a sidecar records, when it describes these files at this size; else None."""
    if meta.get("size") != size:
        return None
    if "filenames" in meta:  # the earlier sidecar, with every name and every kept index
        same = len(meta["filenames"]) == len(filenames) and all(
            a == b for a, b in zip(meta["filenames"], filenames, strict=True)
        )
        return np.asarray(meta["kept"], dtype=np.int64) if same else None
    if meta.get("files") != len(filenames) or meta.get("files_sha256") != _files_digest(filenames):
        return None
    return np.flatnonzero(~_mask(len(filenames), np.asarray(meta["dropped"], dtype=np.int64))).astype(np.int32)


def _mask(total: int, rows: np.ndarray) -> np.ndarray:
    """bool [total]: True at ``rows``."""
    mask = np.zeros(total, dtype=bool)
    mask[rows] = True
    return mask


def _read_matching(array_path: Path, meta_path: Path, filenames: Sequence[str], size: int) -> CachedImages | None:
    """The cache at these paths, memory-mapped, if it is whole and describes these files at this size."""
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        kept = _kept_if_matching(meta, filenames, size)
        if kept is None:
            return None
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.shape != (len(kept), size, size) or images.dtype != np.uint8:
        return None
    return CachedImages(array_path, images, kept, meta["kinds"], built=False)


def load_or_build_cache(
    cache_dir: Path,
    name: str,
    image_root: Path,
    filenames: Sequence[str],
    size: int,
    workers: int,
    label: str = "images",
    shared_prefix: str | None = None,
) -> CachedImages:
    """Memory-map the cache `name` if it holds `filenames` (paths under `image_root`) at `size`; otherwise copy
    it from the shared store (with `shared_prefix`, when one is installed: worker/data/shared.py), or decode
    them into it and put it in the store for the other hosts."""
    array_path, meta_path = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    if (cached := _read_matching(array_path, meta_path, filenames, size)) is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    store = shared.current() if shared_prefix else None
    if store is not None and (fetched := _download(store, f"{shared_prefix}/{name}", cache_dir, name, filenames, size)):
        return fetched
    kept, kinds = _build(array_path, image_root, filenames, size, workers, label)
    meta_tmp = meta_path.with_name(f"{meta_path.name}.tmp-{os.getpid()}")
    meta_tmp.write_text(json.dumps(_sidecar(size, filenames, kept, kinds)))
    meta_tmp.replace(meta_path)
    if store is not None:
        _upload(store, f"{shared_prefix}/{name}", array_path, meta_path)
    return CachedImages(array_path, np.load(array_path, mmap_mode="r"), kept, kinds, built=True)


def _download(
    store: shared.SharedStore, key: str, cache_dir: Path, name: str, filenames: Sequence[str], size: int
) -> CachedImages | None:
    """The cache copied from the store, or None (not there, not these files, or the store failed: decode)."""
    array_path, meta_path = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    partial = {suffix: cache_dir / f".{name}{suffix}.download-{os.getpid()}" for suffix in (".json", ".npy")}
    try:
        # The sidecar first: it says whether the array is the one wanted before gigabytes are fetched.
        if not store.download(f"{key}.json", partial[".json"]):
            return None
        if _kept_if_matching(json.loads(partial[".json"].read_text()), filenames, size) is None:
            logger.warning("shared image cache %s does not match this split's files; decoding them here", key)
            return None
        if not store.download(f"{key}.npy", partial[".npy"]):
            return None
        if _read_matching(partial[".npy"], partial[".json"], filenames, size) is None:
            logger.warning("shared image cache %s is not whole; decoding the images here", key)
            return None
        # The array before its sidecar: a reader that finds the sidecar finds the whole array beside it.
        partial[".npy"].replace(array_path)
        partial[".json"].replace(meta_path)
    except Exception as exc:  # the store's own errors (a bucket away, denied): decoding here still works
        logger.warning("shared image cache %s not downloaded (%s); decoding the images here", key, exc)
        return None
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    cached = _read_matching(array_path, meta_path, filenames, size)
    if cached is None:
        return None
    logger.info("image cache %s copied from the shared store (%d images), not decoded", name, len(cached.kept))
    return CachedImages(cached.path, cached.images, cached.kept, cached.kinds, built=False, downloaded=True)


def _upload(store: shared.SharedStore, key: str, array_path: Path, meta_path: Path) -> None:
    """The array, then its sidecar (a reader takes the sidecar as the sign that the array is there)."""
    try:
        store.upload(array_path, f"{key}.npy")
        store.upload(meta_path, f"{key}.json")
    except Exception as exc:  # the local cache is whole; only the other hosts lose (they decode)
        logger.warning("image cache %s not put in the shared store (%s); other hosts will decode it", key, exc)


_POOL_BATCH = 4096
"""Images handed to the decoding pool at a time (their paths are made per batch, never all at once)."""


def _decode_all(
    image_root: Path, filenames: Sequence[str], size: int, workers: int
) -> Iterator[tuple[np.ndarray | None, DecodeKind]]:
    def paths(start: int, stop: int) -> list[str]:
        return [str(image_root / filenames[i]) for i in range(start, stop)]

    total = len(filenames)
    if workers <= 1 or total < POOL_MIN_IMAGES:
        for start in range(0, total, _POOL_BATCH):
            yield from (decode_image(name, size) for name in paths(start, min(total, start + _POOL_BATCH)))
        return
    done = 0
    try:
        # spawn, not fork: the parent may hold torch and its thread pools, which do not survive a fork.
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
            chunk = max(1, min(64, total // (workers * 8)))
            for start in range(0, total, _POOL_BATCH):
                names = paths(start, min(total, start + _POOL_BATCH))
                for result in pool.map(decode_image, names, repeat(size), chunksize=chunk):
                    yield result
                    done += 1
    except BrokenProcessPool as exc:
        # A spawned child re-imports the parent's __main__; a script without an `if __name__ == "__main__":`
        # guard (or a child killed for memory) breaks the pool. Slower is better than failing.
        logger.warning("image decoding pool failed (%s); decoding the remaining images in this process", exc)
        for start in range(done, total, _POOL_BATCH):
            yield from (decode_image(name, size) for name in paths(start, min(total, start + _POOL_BATCH)))


def _exit_with(parent: int) -> None:
    """In a decoding process: exit when ``parent`` has gone. A data stage killed with SIGKILL cannot stop its
    pool, and the pool's processes would otherwise wait for work forever, each holding its memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _build(
    array_path: Path, image_root: Path, filenames: Sequence[str], size: int, workers: int, label: str
) -> tuple[np.ndarray, dict[DecodeKind, int]]:
    """Decode into a temporary .npy (cut short if some files fail) and rename it to `array_path`."""
    workers = workers or os.cpu_count() or 1
    total = len(filenames)
    tmp = array_path.with_name(f"{array_path.stem}.tmp-{socket.gethostname()}-{os.getpid()}.npy")
    decoded = np.zeros(total, dtype=bool)
    kinds: Counter[str] = Counter()
    stored = 0
    # Written through a file, not a writable memory map: the pages go to the page cache without being mapped
    # into this process (a map of the whole cache would count every page written in its resident memory).
    with tmp.open("wb") as handle, progress(f"caching {label}", total, "images") as advance:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (total, size, size)}  # fmt: skip
        np.lib.format.write_array_header_1_0(handle, header)
        for index, (pixels, kind) in enumerate(_decode_all(image_root, filenames, size, workers)):
            kinds[kind] += 1
            if pixels is not None:
                if pixels.shape != (size, size):
                    raise ValueError(f"{filenames[index]} decoded to {pixels.shape}, not ({size}, {size})")
                handle.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
                stored += 1
                decoded[index] = True
            advance(1)
    if stored < total:
        _truncate(tmp, stored)
    tmp.replace(array_path)
    logger.debug("cached %d of %d %s at %s", stored, total, label, array_path)
    return np.flatnonzero(decoded).astype(np.int32), dict(kinds)


def _truncate(path: Path, rows: int) -> None:
    """Keep the first `rows` rows of the .npy at `path`: its header rewritten for the new shape and the file cut
    after them, in place. The decoded images were written from the top, so nothing moves and nothing is copied
    (a copy of the kept images would need their size again on disk, and read every page of them)."""
    fmt = np.lib.format
    with path.open("r+b") as file:
        version = fmt.read_magic(file)
        read, write = _HEADER_IO[version]
        shape, fortran, dtype = read(file)
        offset = file.tell()
        new_shape = (rows, *shape[1:])
        header = io.BytesIO()
        write(header, {"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran, "shape": new_shape})
        # numpy pads a header so that its first axis can change length in place; checked all the same.
        if len(header.getvalue()) != offset:
            raise RuntimeError(f"{path}: the .npy header for shape {new_shape} does not fit in place")
        file.seek(0)
        file.write(header.getvalue())
        file.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


_HEADER_IO = {
    (1, 0): (np.lib.format.read_array_header_1_0, np.lib.format.write_array_header_1_0),
    (2, 0): (np.lib.format.read_array_header_2_0, np.lib.format.write_array_header_2_0),
}
