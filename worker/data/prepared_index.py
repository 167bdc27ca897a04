"""The prepared index: a data stage's splits as column files, so later processes read no dataset file.

Reading a dataset (at MIMIC-CXR size: two CSVs with 377,110 rows and 227,827 report files) takes a minute
and, held as Python objects, hundreds of megabytes. The data stage does it once and writes each split's
columns (study ids, image paths, projections, target texts: worker.data.columns) beside the image caches,
under ``prepared/<dataset>/index/<key>/``; every later ``load_prepared`` with the same settings memory-maps
them. The key is a digest of the data settings that change the splits (every ``data.*`` field that says
which data, and the evaluation protocol's cleaning) and of the dataset's identity files' sizes and
modification times (its reader's ``identity_files``: the CSVs, annotation or manifest). The index also
records the image folder's modification time. Editing report files or images in place elsewhere is not
seen: delete the ``index`` folder (or the prepared folder) to read the dataset again.

Written under a temporary name and renamed into place: a reader finds a whole index or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from worker.config import DATA_IDENTITY_FIELDS, RunConfig
from worker.data.columns import StringColumn
from worker.data.readers import reader_for

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
"""Raised when what the index holds, or how a reader reads, changes: older indexes are then rebuilt."""
_COLUMNS = ("uids", "filenames", "projections", "texts")
_META = "index.json"


def _stat(path: Path) -> list[Any]:
    try:
        info = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), info.st_size, info.st_mtime_ns]


def index_folder(config: RunConfig, root: Path, prepared_dir: Path) -> Path:
    """Where the index of these settings and these dataset files lies (it may not exist yet)."""
    data = config.data
    key = {
        "version": INDEX_VERSION,
        "data": {name: getattr(data, name) for name in DATA_IDENTITY_FIELDS},
        "protocol": config.eval.protocol,
        "split_file": _stat(config.local_path(data.split_file)) if data.split_file else None,
        "files": [_stat(path) for path in reader_for(data.source).identity_files(root)],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return prepared_dir / "index" / digest


def _owner() -> str:
    """This process on this host, in a folder's name: a crashed process's folders are found by it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_abandoned(prepared_dir: Path) -> None:
    """Remove the scratch folders, half-written indexes and half-written image caches that processes of this host
    left when they were killed (their ids are no longer running); another host's are left alone (its processes
    cannot be seen from here)."""
    host = socket.gethostname()
    patterns = (".parse-*", "index/.*.tmp-*", "cache/*.tmp-*")
    for path in [found for pattern in patterns for found in prepared_dir.glob(pattern)]:
        owner, _, pid = path.name.removesuffix(".npy").rpartition("-")
        if not (owner.endswith(f"-{host}") and pid.isdigit()) or _alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def scratch_folder(prepared_dir: Path) -> Path:
    """Where this process's reader writes its columns while it reads (removed after the index is written)."""
    return prepared_dir / f".parse-{_owner()}"


def save_index(
    folder: Path, splits: dict[str, Any], counts: dict[str, int], artifacts: dict[str, str],
    missing: dict[str, list[str]], image_root: Path,
) -> None:  # fmt: skip
    """Write the splits' columns (each split a ``SplitData``) and what ``load_index`` returns with them."""
    tmp = folder.with_name(f".{folder.name}.tmp-{_owner()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, split in splits.items():
        for column in _COLUMNS:
            getattr(split, column).save(tmp / name, column)
    meta = {
        "version": INDEX_VERSION, "counts": counts, "artifacts": artifacts, "missing_studies": missing,
        "image_root": _stat(image_root), "splits": {name: len(split) for name, split in splits.items()},
    }  # fmt: skip
    (tmp / _META).write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(folder)
    except OSError:  # another process wrote the same index first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
        return
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in splits.items())
    logger.info("prepared index written to %s (%s images); later runs read it, not the dataset", folder, sizes)


def load_index(
    folder: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, str], dict[str, list[str]]] | None:
    """Each split's columns and ``images`` (memory-mapped: the fields of a ``SplitData``), the counts, artifacts and
    missing studies of the index in ``folder``; None when there is none, or its image folder or caches changed
    since it was written."""
    try:
        meta = json.loads((folder / _META).read_text())
        if meta.get("version") != INDEX_VERSION or _stat(Path(meta["image_root"][0])) != meta["image_root"]:
            return None
        splits = {}
        for name, rows in meta["splits"].items():
            images = np.load(meta["artifacts"][f"cache_{name}"], mmap_mode="r")
            columns = {column: StringColumn.load(folder / name, column) for column in _COLUMNS}
            if len(images) != rows or any(len(column) != rows for column in columns.values()):
                return None
            splits[name] = {"images": images, **columns}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return splits, meta["counts"], meta["artifacts"], meta["missing_studies"]
