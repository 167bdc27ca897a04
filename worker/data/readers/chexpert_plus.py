"""The CheXpert Plus layout: the report CSV beside the image folder, one CSV row per image.

Stanford AIMI's CheXpert Plus release (Chambon et al. 2024, arXiv:2405.19538; github.com/Stanford-AIMI/chexpert-plus)
ships its reports and metadata as ``df_chexpert_plus_240401.csv``: one row per image with, among others,

- ``path_to_image``: ``train/patient00001/study1/view1_frontal.jpg`` (the path of CheXpert's own JPEG release; the
  PNG release keeps the folders and names with a ``.png`` suffix, unpacked under ``PNG/``);
- ``frontal_lateral`` (``Frontal`` or ``Lateral``) and ``ap_pa`` (``AP``, ``PA``, ... as CheXpert's AP/PA column);
- ``deid_patient_id``, ``patient_report_date_order``, ``split`` (``train`` or ``valid``);
- the report, whole (``report``) and parsed into sections: ``section_findings``, ``section_impression``,
  ``section_narrative``, ``section_clinical_history``, ``section_history``, ``section_comparison``,
  ``section_technique``, ``section_procedure_comments``, ``section_end_of_impression``, ``section_summary``,
  ``section_accession_number``.

A study is ``patientNNNNN/studyN`` from the image path (CheXpert numbers studies per patient); its patient is
``deid_patient_id`` (the path's ``patientNNNNN`` where that column is empty or absent). The split column has
train and valid only (CheXpert's 500-study test set has no reports in it): valid is the validation split, and
the test split is drawn from train by patient (worker.data.prepared).

An image row is kept only if its path names a patient and a study, its projection is Frontal or Lateral, its
image file exists and its study's report has the target section; each row is counted under the first check it
fails (``rows_bad_path``, ``rows_unknown_projection``, ``rows_missing_file``, ``rows_without_target``).

The CSV is streamed a batch of rows at a time into a ``DatasetBuilder`` (columns in ``ReadOptions.scratch``);
the row of a study seen before is found in ``StudyRows`` (its rows need not be consecutive), and per study only
a few bytes are held (patient key, whether it has its target, the projections seen).
"""

from __future__ import annotations

import csv
import re
import sys
from array import array
from collections import defaultdict
from itertools import islice
from pathlib import Path, PurePosixPath

from worker.data.heap import release_free_memory
from worker.data.readers.base import (
    DataLayoutError,
    DatasetBuilder,
    DatasetReader,
    ParsedDataset,
    ReadOptions,
    target_text,
)
from worker.data.readers.keys import StudyRows, distinct, id_key, key_array

CHEXPERT_PLUS_CSV = "df_chexpert_plus_240401.csv"
"""The report CSV of the 2024-04-01 release; a later ``df_chexpert_plus_*.csv`` alone in the folder is read too."""
PATH_COLUMN = "path_to_image"
REQUIRED_COLUMNS = (PATH_COLUMN, "frontal_lateral", "section_findings", "section_impression")
OPTIONAL_COLUMNS = ("ap_pa", "deid_patient_id", "split")
IMAGE_FOLDERS = ("PNG", "", "PNG/PNG")
"""Where ``path_to_image`` is looked for under the dataset folder: the PNG release unpacked as ``PNG/``, the
folder itself (JPEGs or PNGs beside the CSV), or a zip unpacked into ``PNG/PNG/``."""
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "validate": "val", "test": "test"}
_PATIENT, _STUDY = re.compile(r"^patient\d+$"), re.compile(r"^study\d+$")
LAYOUT = (
    f"the CheXpert Plus layout: {CHEXPERT_PLUS_CSV} (columns {', '.join(REQUIRED_COLUMNS)}, optionally "
    f"{', '.join(OPTIONAL_COLUMNS)}) beside its image folder PNG/train/patientNNNNN/studyN/viewN_frontal.png"
)


def report_csv(root: Path) -> Path:
    """The report CSV of the folder: the release's own name, else the one ``df_chexpert_plus_*.csv`` there."""
    path = root / CHEXPERT_PLUS_CSV
    if path.is_file():
        return path
    found = sorted(root.glob("df_chexpert_plus_*.csv")) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not root.is_dir():
        raise DataLayoutError(f"{root} is not a CheXpert Plus folder (a folder is expected): {LAYOUT}")
    raise DataLayoutError(f"{root} is not a CheXpert Plus folder: {CHEXPERT_PLUS_CSV} is missing (expected {LAYOUT})")


def check_layout(root: Path) -> None:
    _header(report_csv(root))


def _unreadable(path: Path, exc: Exception) -> DataLayoutError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return DataLayoutError(f"{path}: cannot be read as CheXpert Plus's report CSV ({type(exc).__name__}: {reason})")


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _unreadable(path, exc) from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DataLayoutError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}; "
            f"expected {', '.join(REQUIRED_COLUMNS)} (and optionally {', '.join(OPTIONAL_COLUMNS)})"
        )
    return header


def study_of(path: str) -> tuple[str, str] | None:
    """(study uid ``patientNNNNN/studyN``, the path's patient) of an image path, None if it names neither."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    for index in range(len(parts) - 1):
        if _PATIENT.match(parts[index]) and _STUDY.match(parts[index + 1]):
            return f"{parts[index]}/{parts[index + 1]}", parts[index]
    return None


class _ImageFinder:
    """Finds each CSV path under the dataset folder, trying first the folder and suffix that worked last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ways = [(folder, suffix) for folder in IMAGE_FOLDERS for suffix in (".png", "")]

    def find(self, path: str) -> str | None:
        """The image's path relative to the dataset folder, None if no candidate exists."""
        relative = PurePosixPath(path.replace("\\", "/"))
        for index, (folder, suffix) in enumerate(self.ways):
            candidate = relative.with_suffix(suffix) if suffix else relative
            name = str(PurePosixPath(folder) / candidate) if folder else str(candidate)
            if (self.root / name).is_file():
                if index:
                    self.ways.insert(0, self.ways.pop(index))
                return name
        return None


def parse_dataset(root: Path, options: ReadOptions) -> ParsedDataset:
    path = report_csv(root)
    try:
        return _parse(root, path, _header(path), options)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _unreadable(path, exc) from None


_BATCH = 1024
"""CSV rows read per batch (the studies' rows are looked up in ``StudyRows`` a batch at a time)."""
_FRONTAL, _LATERAL = 1, 2
"""Bits of a study's projections seen."""


def _parse(root: Path, path: Path, header: list[str], options: ReadOptions) -> ParsedDataset:
    counts: dict[str, int] = defaultdict(int)
    builder = DatasetBuilder(root, options.scratch)
    studies = StudyRows()
    patients = array("Q")  # per study row: its patient's key, to count the patients
    has_text = bytearray()  # per study row: whether its target text is not empty
    projections = bytearray()  # per study row: _FRONTAL | _LATERAL as seen in its rows
    finder = _ImageFinder(root)

    def add(batch: list[tuple[str, str, str, dict[str, str]]]) -> None:
        """The batch's new studies, then each row: listed, checked, and added where usable."""
        keys = key_array((id_key(uid) for uid, *_ in batch), len(batch))
        for (uid, path_patient, image, record), (key, row) in zip(batch, studies.rows_of(keys), strict=True):
            if row < 0:  # the study's first row: its report, patient and split are the study's
                text = target_text(record.get("section_findings"), record.get("section_impression"), options)
                patient = (record.get("deid_patient_id") or "").strip() or path_patient
                split = (record.get("split") or "").strip().lower()
                if split and split not in SPLIT_NAMES:
                    counts["studies_unknown_split"] += 1
                official = SPLIT_NAMES.get(split, "")
                row = studies.add(key, builder.study(uid, patient=patient, official=official, text=text))
                patients.append(id_key(patient))
                has_text.append(bool(text))
                projections.append(0)
            builder.listed(row, image)
            projection = (record.get("frontal_lateral") or "").strip().capitalize()
            if projection not in ("Frontal", "Lateral"):
                counts["rows_unknown_projection"] += 1
                continue
            projections[row] |= _FRONTAL if projection == "Frontal" else _LATERAL
            found = finder.find(image)
            if found is None:
                counts["rows_missing_file"] += 1
            elif not has_text[row]:
                counts["rows_without_target"] += 1
            else:
                view = (record.get("ap_pa") or "").strip().upper() or ("LATERAL" if projection == "Lateral" else "")
                builder.image(row, found, projection, view)
        studies.merge()

    csv.field_size_limit(sys.maxsize)  # whole reports sit in one field
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        _ = reader.fieldnames  # reads the header row, replaced by its stripped names
        reader.fieldnames = header
        while records := list(islice(reader, _BATCH)):
            batch = []
            for record in records:
                image = (record.get(PATH_COLUMN) or "").strip()
                study = study_of(image)
                if study is None:
                    counts["rows_bad_path"] += 1
                else:
                    batch.append((*study, image, record))
            counts["image_rows"] += len(records)
            add(batch)
            del records, batch
            release_free_memory()  # the batch's rows and the index's previous arrays: freed pages handed back
    counts["reports"] = len(studies)
    counts["patients"] = distinct(patients)
    counts["studies_without_target"] = len(has_text) - sum(has_text)
    counts["studies_frontal_only"] = projections.count(_FRONTAL)
    counts["studies_lateral_only"] = projections.count(_LATERAL)
    for name in ("rows_bad_path", "rows_unknown_projection", "rows_missing_file", "rows_without_target"):
        counts.setdefault(name, 0)
    return builder.finish(dict(counts))


CHEXPERT_PLUS = DatasetReader(
    layout=LAYOUT, check_layout=check_layout, parse=parse_dataset, identity_files=lambda root: [report_csv(root)]
)
