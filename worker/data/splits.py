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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

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


_TEXT, _LONG_NUMBER = -1, -2
"""``_int_key`` of a uid that is not a number, and of one too long for int64."""


def _int_key(value: str) -> int:
    """The value as an int64 sort key; ``_TEXT`` where it is not a number, ``_LONG_NUMBER`` where it has more
    than 18 digits."""
    if not value.isdigit():
        return _TEXT
    return int(value) if len(value) <= 18 else _LONG_NUMBER


def _text_keys(values: Sequence[str], rows: np.ndarray) -> np.ndarray | None:
    """``values[rows]`` as fixed-width UTF-8 bytes (numpy ``S``), encoded a few thousand at a time: their order is
    the strings' code point order, and they hold no Python object per value (a tuple key per uid took 25 MB at
    150,000 text uids). None where a value holds a NUL, which numpy's bytes comparison takes for an end, or a
    lone surrogate."""
    chunks = []
    for start in range(0, len(rows), 4096):
        try:
            encoded = [values[i].encode() for i in rows[start : start + 4096].tolist()]
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form
            return None
        if any(b"\0" in item for item in encoded):
            return None
        chunks.append(np.array(encoded, dtype=bytes))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype="S1")


def uid_order(values: Sequence[str]) -> np.ndarray:
    """Indices of ``values`` in ``_uid_order`` (numbers by value, then the rest as text; ties in input order),
    without a Python object per value: numbers (MIMIC-CXR's 227,827 study ids) sorted as int64, text (CheXpert
    Plus's ``patientNNNNN/studyN``) as UTF-8 bytes."""
    ints = np.fromiter((_int_key(value) for value in values), dtype=np.int64, count=len(values))
    numeric = np.flatnonzero(ints >= 0)
    numeric = numeric[np.argsort(ints[numeric], kind="stable")]
    rows = np.flatnonzero(ints == _TEXT)
    keys = _text_keys(values, rows)
    if keys is not None:
        text = rows[np.argsort(keys, kind="stable")]
    else:
        text = np.asarray(sorted(rows.tolist(), key=lambda i: values[i]), dtype=np.int64)
    # Numbers too long for int64 (rare) sort by _uid_order's (value, "") key: before (2**63, text) up to 2**63.
    long = sorted(np.flatnonzero(ints == _LONG_NUMBER).tolist(), key=lambda i: int(values[i]))
    before = [i for i in long if int(values[i]) <= 2**63]
    after = long[len(before) :]
    parts = [numeric, np.asarray(before, dtype=np.int64), text, np.asarray(after, dtype=np.int64)]
    return np.concatenate(parts).astype(np.int64, copy=False)


def _groups(keys: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each key's group (equal keys, one group), groups numbered in ``_uid_order`` of their key, and the number of
    groups."""
    ints = np.fromiter((_int_key(key) for key in keys), dtype=np.int64, count=len(keys))
    if (ints >= 0).all():
        unique, inverse = np.unique(ints, return_inverse=True)
        return inverse.reshape(-1), len(unique)
    if (ints == _TEXT).all() and (text := _text_keys(keys, np.arange(len(keys)))) is not None:
        unique, inverse = np.unique(text, return_inverse=True)  # in bytes order: _uid_order's for text
        return inverse.reshape(-1), len(unique)
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(key, len(first)) for key in keys), dtype=np.int64, count=len(keys))
    rank = np.empty(len(first), dtype=np.int64)
    rank[uid_order(list(first))] = np.arange(len(first))
    return rank[inverse], len(first)


class _PatientKeys(Sequence[str]):
    """A study's patient, or ``study:UID`` for a study without one (a patient of its own)."""

    def __init__(self, uids: Sequence[str], patients: Sequence[str]):
        self.uids, self.patients = uids, patients

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, i):  # type: ignore[override]
        return self.patients[i] or f"study:{self.uids[i]}"


def draw_split(uids: Sequence[str], seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """int8 code (index into SPLITS) of each of ``uids`` (distinct): the uids in ``_uid_order``, shuffled with
    ``seed`` and cut by ``fractions``."""
    ordered = uid_order(uids)
    shuffled = ordered[np.random.default_rng(seed).permutation(len(ordered))]
    n_train = round(fractions[0] * len(ordered))
    n_val = round(fractions[1] * len(ordered))
    codes = np.full(len(uids), 2, dtype=np.int8)
    codes[shuffled[:n_train]] = 0
    codes[shuffled[n_train : n_train + n_val]] = 1
    return codes


def draw_split_by_patient(
    uids: Sequence[str], patients: Sequence[str], seed: int, fractions: tuple[float, float, float]
) -> np.ndarray:
    """int8 code of each of ``uids`` (distinct; ``patients`` row-aligned, "" for none): the patients in
    ``_uid_order`` shuffled with ``seed``, each one's studies given to one split, filling train, then val, to
    their share of the studies (a study without a patient id is a patient of its own)."""
    group, n_groups = _groups(_PatientKeys(uids, patients))
    sizes = np.bincount(group, minlength=n_groups)
    shuffled = np.random.default_rng(seed).permutation(n_groups)
    total = len(uids)
    bounds = (round(fractions[0] * total), round((fractions[0] + fractions[1]) * total))
    # A patient goes where the running count of studies stands, so the sizes land within one patient's studies
    # of the fractions.
    before = np.cumsum(sizes[shuffled]) - sizes[shuffled]
    code_of = np.empty(n_groups, dtype=np.int8)
    code_of[shuffled] = np.where(before < bounds[0], 0, np.where(before < bounds[1], 1, 2))
    return code_of[group]


def split_lists(uids: Sequence[str], codes: np.ndarray) -> dict[str, list[str]]:
    """The uids of each split, in ``_uid_order`` (the manifest's form); code -1 is in none."""
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for index in uid_order(uids).tolist():
        code = int(codes[index])
        if code >= 0:
            out[SPLITS[code]].append(uids[index])
    return out


def assign_splits(uids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[str]]:
    """Shuffle the uids with `seed` and cut them by `fractions`; each split's uids come back sorted."""
    distinct = list(dict.fromkeys(uids))
    return split_lists(distinct, draw_split(distinct, seed, fractions))


def assign_splits_by_patient(
    uids: list[str], patients: Mapping[str, str], seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[str]]:
    """``draw_split_by_patient`` of the distinct uids, as lists."""
    distinct = list(dict.fromkeys(uids))
    codes = draw_split_by_patient(distinct, [patients.get(uid) or "" for uid in distinct], seed, fractions)
    return split_lists(distinct, codes)


def test_from_train(
    uids: Sequence[str], patients: Sequence[str], train: np.ndarray, seed: int, fractions: tuple[float, float, float]
) -> np.ndarray:
    """Studies ``train`` (indices) of a dataset split cut into train and test by patient, the test taking the share
    ``fractions[2] / (fractions[0] + fractions[2])`` of them (for an official split that has no test): the
    indices of the ones that go to test."""
    share = fractions[2] / (fractions[0] + fractions[2])
    sub_uids, sub_patients = _Rows(uids, train), _Rows(patients, train)
    codes = draw_split_by_patient(sub_uids, sub_patients, seed, (1.0 - share, 0.0, share))
    return train[codes > 0]


class _Rows(Sequence[str]):
    """Some rows of a sequence."""

    def __init__(self, values: Sequence[str], rows: np.ndarray):
        self.values, self.rows = values, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.values[int(self.rows[i])]


def crossing_patients(patients: Sequence[str], codes: np.ndarray) -> tuple[int, str, list[str]]:
    """How many patients have studies in more than one split (``codes`` per study, -1 in none; studies without a
    patient are ignored), one of them and its splits."""
    has = np.fromiter((bool(p) for p in patients), dtype=bool, count=len(patients)) & (codes >= 0)
    rows = np.flatnonzero(has)
    if not len(rows):
        return 0, "", []
    group, _ = _groups(_Rows(patients, rows))
    pairs = np.unique(group * len(SPLITS) + codes[rows])  # one number per (patient, split) pair
    groups, per_group = np.unique(pairs // len(SPLITS), return_counts=True)
    crossing = groups[per_group > 1]
    if not len(crossing):
        return 0, "", []
    first = int(np.flatnonzero(group == crossing[0])[0])
    names = sorted(SPLITS[c] for c in (pairs[pairs // len(SPLITS) == crossing[0]] % len(SPLITS)).tolist())
    return len(crossing), patients[int(rows[first])], names


def check_patient_disjoint_codes(patients: Sequence[str], codes: np.ndarray, what: str) -> None:
    """Raise ConfigError, naming a patient and the splits, if a patient's studies are in two splits."""
    count, patient, names = crossing_patients(patients, codes)
    if count:
        raise ConfigError(
            f"{what} puts the studies of {count} patient(s) in more than one split (e.g. patient {patient} in "
            f"{' and '.join(names)}): fix the split, or set data.official_split=false to draw one by patient"
        )


def check_patient_disjoint(splits: Mapping[str, list[str]], patients: Mapping[str, str], what: str) -> None:
    """``check_patient_disjoint_codes`` for a split as lists of uids and a uid -> patient mapping."""
    uids = [uid for part in splits.values() for uid in part]
    codes = np.array([SPLITS.index(name) for name, part in splits.items() for _ in part], dtype=np.int8)
    check_patient_disjoint_codes([patients.get(uid) or "" for uid in uids], codes, what)


def load_or_create_split(
    directory: Path,
    uids: Sequence[str],
    seed: int,
    fractions: tuple[float, float, float],
    patients: Sequence[str] | None = None,
) -> tuple[np.ndarray, Path]:
    """The split code of each of ``uids`` (distinct) for ``seed`` (by patient when ``patients``, row-aligned, is
    given): read from the manifest if it covers exactly these uids, else drawn and saved."""
    path = manifest_path(directory, seed, fractions, by_patient=patients is not None)
    if path.is_file():
        stored = json.loads(path.read_text())["uids"]
        code_of = {uid: SPLITS.index(name) for name, part in stored.items() for uid in part}
        codes = np.fromiter((code_of.get(uid, -1) for uid in uids), dtype=np.int8, count=len(uids))
        if len(code_of) == len(uids) and (codes >= 0).all():
            return codes, path
        logger.warning("split manifest %s does not match the dataset's studies; drawing a new one", path)
    if patients is not None:
        codes = draw_split_by_patient(uids, patients, seed, fractions)
    else:
        codes = draw_split(uids, seed, fractions)
    content = {"seed": seed, "fractions": list(fractions), "by_patient": patients is not None}
    write_split_manifest(directory, path.name, content, uids, codes)
    return codes, path


def load_or_create_manifest(
    directory: Path,
    uids: list[str],
    seed: int,
    fractions: tuple[float, float, float],
    patients: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[str]], Path]:
    """``load_or_create_split`` for a list of uids and a uid -> patient mapping, as lists per split."""
    distinct = list(dict.fromkeys(uids))
    rows = [patients.get(uid) or "" for uid in distinct] if patients else None
    codes, path = load_or_create_split(directory, distinct, seed, fractions, rows)
    return split_lists(distinct, codes), path


def write_manifest(directory: Path, name: str, content: dict) -> Path:
    """Write a manifest atomically (a concurrent reader sees the old file or the new, never half of one)."""
    return _write_atomic(directory, name, lambda handle: handle.write(json.dumps(content, indent=1)))


def write_split_manifest(directory: Path, name: str, content: dict, uids: Sequence[str], codes: np.ndarray) -> Path:
    """``write_manifest`` of ``content`` plus ``"uids"``: each split's uids (``codes``, row-aligned, -1 in none) in
    ``_uid_order``, written a few thousand at a time (at MIMIC-CXR size the lists would be 227,827 strings)."""
    order = uid_order(uids)

    def write(handle: TextIO) -> None:
        handle.write("{\n" + "".join(f" {json.dumps(key)}: {json.dumps(value)},\n" for key, value in content.items()))
        handle.write(' "uids": {')
        for code, split in enumerate(SPLITS):
            rows = order[codes[order] == code]
            handle.write(f"{',' if code else ''}\n  {json.dumps(split)}: [")
            for start in range(0, len(rows), 4096):
                names = ", ".join(json.dumps(uids[row]) for row in rows[start : start + 4096].tolist())
                handle.write((", " if start else "") + names)
            handle.write("]")
        handle.write("\n }\n}\n")

    return _write_atomic(directory, name, write)


def _write_atomic(directory: Path, name: str, write: Callable[[TextIO], object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        write(handle)
    tmp.replace(path)
    return path
