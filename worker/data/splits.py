"""Train/val/test split by study uid, seeded, stored as a manifest and reused.

IU-Xray uids identify a study (a patient visit) with its frontal and lateral images; splitting by uid
keeps both views of a study, and its report, on the same side. The manifest is a JSON file beside the
prepared data, named for the seed and fractions; a later run with the same seed reads it instead of
drawing again, so splits stay fixed even if the shuffling code changes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def manifest_path(directory: Path, seed: int, fractions: tuple[float, float, float]) -> Path:
    percent = "-".join(f"{round(f * 100):d}" for f in fractions)
    return directory / f"splits-seed{seed}-{percent}.json"


def _uid_order(uid: str) -> tuple[int, str]:
    """Numeric uids in numeric order (IU-Xray uids are integers), anything else after them."""
    return (int(uid), "") if uid.isdigit() else (2**63, uid)


def assign_splits(uids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[str]]:
    """Shuffle the uids with `seed` and cut them by `fractions`; each split's uids come back sorted."""
    ordered = sorted(set(uids), key=_uid_order)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    n_train = round(fractions[0] * len(ordered))
    n_val = round(fractions[1] * len(ordered))
    cuts = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {name: sorted(part, key=_uid_order) for name, part in cuts.items()}


def load_or_create_manifest(
    directory: Path, uids: list[str], seed: int, fractions: tuple[float, float, float]
) -> tuple[dict[str, list[str]], Path]:
    """The split of `uids` for `seed`: read from the manifest if it covers exactly these uids, else drawn and saved."""
    path = manifest_path(directory, seed, fractions)
    if path.is_file():
        stored = json.loads(path.read_text())
        splits = stored["uids"]
        if sorted(uid for part in splits.values() for uid in part) == sorted(set(uids)):
            return splits, path
        logger.warning("split manifest %s does not match the dataset's studies; drawing a new one", path)
    splits = assign_splits(uids, seed, fractions)
    write_manifest(directory, path.name, {"seed": seed, "fractions": list(fractions), "uids": splits})
    return splits, path


def write_manifest(directory: Path, name: str, content: dict) -> Path:
    """Write a manifest atomically (a concurrent reader sees the old file or the new, never half of one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1))
    tmp.replace(path)
    return path
