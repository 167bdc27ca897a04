"""Train/val/test split by study uid (or by patient, where the dataset has patient ids), seeded, stored as a
manifest and reused.

IU-Xray uids identify a study (a patient visit) with its frontal and lateral images; splitting by uid
keeps both views of a study, and its report, on the same side. Datasets with patient ids (MIMIC-CXR,
CheXpert Plus, a manifest with a patient column) are split by patient, so no patient's studies straddle
two splits: a model must not be scored on a patient whose earlier films it trained on. The manifest is a
JSON file beside the prepared data, named for the seed and fractions; a later run with the same seed reads
it instead of drawing again, so splits stay fixed even if the shuffling code changes.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from worker.config import ConfigError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def manifest_path(directory: Path, seed: int, fractions: tuple[float, float, float], by_patient: bool = False) -> Path:
    percent = "-".join(f"{round(f * 100):d}" for f in fractions)
    return directory / f"splits-seed{seed}-{percent}{'-by-patient' if by_patient else ''}.json"


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


def assign_splits_by_patient(
    uids: list[str], patients: Mapping[str, str], seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[str]]:
    """Shuffle the patients with `seed` and give each one's studies to one split, filling train, then val,
    to their share of the studies (a study without a patient id is a patient of its own)."""
    studies: dict[str, list[str]] = defaultdict(list)
    for uid in sorted(set(uids), key=_uid_order):
        studies[patients.get(uid) or f"study:{uid}"].append(uid)
    order = sorted(studies, key=_uid_order)
    shuffled = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    total = sum(len(group) for group in studies.values())
    bounds = (round(fractions[0] * total), round((fractions[0] + fractions[1]) * total))
    cuts: dict[str, list[str]] = {name: [] for name in SPLITS}
    assigned = 0
    for patient in shuffled:
        # A patient goes where the running count of studies stands, so the sizes land within one
        # patient's studies of the fractions.
        name = "train" if assigned < bounds[0] else "val" if assigned < bounds[1] else "test"
        cuts[name].extend(studies[patient])
        assigned += len(studies[patient])
    return {name: sorted(part, key=_uid_order) for name, part in cuts.items()}


def check_patient_disjoint(splits: Mapping[str, list[str]], patients: Mapping[str, str], what: str) -> None:
    """Raise ConfigError, naming a patient and the splits, if a patient's studies are in two splits."""
    seen: dict[str, str] = {}
    crossing: dict[str, set[str]] = defaultdict(set)
    for name, part in splits.items():
        for uid in part:
            patient = patients.get(uid)
            if not patient:
                continue
            first = seen.setdefault(patient, name)
            if first != name:
                crossing[patient].update((first, name))
    if crossing:
        patient, names = next(iter(crossing.items()))
        raise ConfigError(
            f"{what} puts the studies of {len(crossing)} patient(s) in more than one split (e.g. patient {patient} in "
            f"{' and '.join(sorted(names))}): fix the split, or set data.official_split=false to draw one by patient"
        )


def load_or_create_manifest(
    directory: Path,
    uids: list[str],
    seed: int,
    fractions: tuple[float, float, float],
    patients: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[str]], Path]:
    """The split of `uids` for `seed` (by patient when `patients` is given): read from the manifest if it covers
    exactly these uids, else drawn and saved."""
    path = manifest_path(directory, seed, fractions, by_patient=bool(patients))
    if path.is_file():
        stored = json.loads(path.read_text())
        splits = stored["uids"]
        if sorted(uid for part in splits.values() for uid in part) == sorted(set(uids)):
            return splits, path
        logger.warning("split manifest %s does not match the dataset's studies; drawing a new one", path)
    if patients:
        splits = assign_splits_by_patient(uids, patients, seed, fractions)
    else:
        splits = assign_splits(uids, seed, fractions)
    content = {"seed": seed, "fractions": list(fractions), "by_patient": bool(patients), "uids": splits}
    write_manifest(directory, path.name, content)
    return splits, path


def write_manifest(directory: Path, name: str, content: dict) -> Path:
    """Write a manifest atomically (a concurrent reader sees the old file or the new, never half of one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1))
    tmp.replace(path)
    return path
