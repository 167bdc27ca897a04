"""The decoded-image cache: one memory-mappable ``.npy`` per split, projection and resolution.

Decoding a full-size IU-Xray PNG costs tens of milliseconds, more than a GPU step per image, so each
image is decoded and resized once, by a process pool over all cores, and stored as uint8
``[N, size, size]``. Later runs and every epoch memory-map the file. A JSON sidecar records which of the
requested files it holds (the undecodable ones are left out) and how each was stored; the cache is
reused only when the sidecar's file list equals the requested one.

Both files are written under temporary names and renamed into place, so an interrupted build is never
mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track

from worker.data.images import DecodeKind, decode_image

logger = logging.getLogger(__name__)

POOL_MIN_IMAGES = 256
"""Below this many images one process decodes faster than a pool starts."""


@dataclass(frozen=True)
class CachedImages:
    path: Path
    images: np.ndarray
    """uint8 [len(kept), size, size], memory-mapped."""
    kept: list[int]
    """Indices into the requested files of the images that decoded, in order."""
    kinds: dict[DecodeKind, int]
    """How many of the requested files were stored in each way (including "undecodable")."""
    built: bool
    """True when this call decoded the images, False when it read an existing cache."""


def cache_name(split: str, projection: str, size: int, filenames: list[str]) -> str:
    """Readable prefix plus a digest of the file list: a changed split or filter never reads a stale cache."""
    digest = hashlib.sha1("\n".join(filenames).encode()).hexdigest()[:10]
    return f"{split}-{projection}-{size}px-{digest}"


def load_or_build_cache(
    cache_dir: Path, name: str, image_root: Path, filenames: list[str], size: int, workers: int,
    label: str = "images",
) -> CachedImages:  # fmt: skip
    """Memory-map the cache `name` if it holds `filenames` (paths under `image_root`) at `size`; otherwise
    decode them into it."""
    array_path, meta_path = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    paths = [image_root / filename for filename in filenames]
    if array_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("filenames") == filenames and meta.get("size") == size:
            images = np.load(array_path, mmap_mode="r")
            return CachedImages(array_path, images, meta["kept"], meta["kinds"], built=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    kept, kinds = _build(array_path, paths, size, workers, label)
    meta_tmp = meta_path.with_name(f"{meta_path.name}.tmp-{os.getpid()}")
    meta_tmp.write_text(json.dumps({"size": size, "filenames": filenames, "kept": kept, "kinds": kinds}))
    meta_tmp.replace(meta_path)
    return CachedImages(array_path, np.load(array_path, mmap_mode="r"), kept, kinds, built=True)


def _decode_all(paths: list[Path], size: int, workers: int) -> Iterator[tuple[np.ndarray | None, DecodeKind]]:
    names = [str(p) for p in paths]
    if workers <= 1 or len(names) < POOL_MIN_IMAGES:
        yield from (decode_image(name, size) for name in names)
        return
    done = 0
    try:
        # spawn, not fork: the parent may hold torch and its thread pools, which do not survive a fork.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            chunk = max(1, min(64, len(names) // (workers * 8)))
            for result in pool.map(decode_image, names, repeat(size), chunksize=chunk):
                yield result
                done += 1
    except BrokenProcessPool as exc:
        # A spawned child re-imports the parent's __main__; a script without an `if __name__ == "__main__":`
        # guard (or a child killed for memory) breaks the pool. Slower is better than failing.
        logger.warning("image decoding pool failed (%s); decoding the remaining images in this process", exc)
        yield from (decode_image(name, size) for name in names[done:])


def _build(
    array_path: Path, paths: list[Path], size: int, workers: int, label: str
) -> tuple[list[int], dict[DecodeKind, int]]:
    """Decode into a temporary .npy (compacted if some files fail) and rename it to `array_path`."""
    workers = workers or os.cpu_count() or 1
    tmp = array_path.with_name(f"{array_path.stem}.tmp-{os.getpid()}.npy")
    full = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
    kept: list[int] = []
    kinds: Counter[str] = Counter()
    decoded = _decode_all(paths, size, workers)
    # The bar goes to stderr (stdout may carry the stage's --json result), and only to a terminal.
    console = Console(stderr=True)
    progress = track(
        decoded,
        total=len(paths),
        description=f"caching {label}",
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    for index, (pixels, kind) in enumerate(progress):
        kinds[kind] += 1
        if pixels is not None:
            full[len(kept)] = pixels
            kept.append(index)
    full.flush()
    if len(kept) < len(paths):
        compact_tmp = tmp.with_name(f"{array_path.stem}.tmp-{os.getpid()}-compact.npy")
        compact = np.lib.format.open_memmap(compact_tmp, mode="w+", dtype=np.uint8, shape=(len(kept), size, size))
        compact[:] = full[: len(kept)]
        compact.flush()
        del compact
        tmp.unlink()
        tmp = compact_tmp
    del full
    tmp.replace(array_path)
    logger.debug("cached %d of %d %s at %s", len(kept), len(paths), label, array_path)
    return kept, dict(kinds)
