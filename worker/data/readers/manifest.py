"""A manifest the user writes: one file (CSV, JSONL or Parquet, by its extension) that names each study's images,
report, study and patient, and optionally each image's view and each study's split.

Columns (docs/datasets.md, "Your own data (manifest)"):

- ``image_path`` (or ``image_paths``): one image path, or several as a list (JSONL, Parquet) or separated by
  ``;``. Relative paths are relative to the manifest's folder; absolute paths are read as they are.
- ``report``, or ``findings`` and/or ``impression``: a section column, where present, is that section (an empty
  cell: the report has no such section); a section without a column is read from ``report``'s headers
  (``FINDINGS:``, ``IMPRESSION:``; ``sections_of``).
- ``study_id``, ``patient_id``: a study's rows share its report and its split; a patient's studies share a split.
- ``view`` (optional): PA, AP (and their variants such as AP SUPINE), LATERAL, LL, RL, or Frontal / Lateral; one
  value for every image of the row, or one per image (a list, or ``;``-separated). An empty view is taken as
  frontal (counted in ``images_without_view``).
- ``split`` (optional): train, val or test (validate, valid and validation mean val); empty leaves the study out
  of the manifest's split (counted by the data stage).

A study may take one row per image or one row with all its images; its report, patient and split come from its
first row, and a later row that names another patient or split for it is refused. An image is kept only if its
row has a study id, its view is known, its file exists and its study has the target section; each image is
counted under the first check it fails (``rows_without_study_id``, ``rows_without_image``,
``images_unknown_view``, ``images_missing_file``, ``images_without_target``).

The manifest is streamed a batch of rows at a time into a ``DatasetBuilder`` (columns in
``ReadOptions.scratch``); a study read before is found by key in ``StudyRows`` (its rows need not be
consecutive), and per study only a few bytes are held (``_Studies``).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterator
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any

from worker.data.heap import release_free_memory
from worker.data.readers.base import (
    SPLIT_CODES,
    DataLayoutError,
    DatasetBuilder,
    DatasetReader,
    ParsedDataset,
    ReadOptions,
    target_text,
)
from worker.data.readers.keys import StudyRows, distinct, id_key, key_array

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
IMAGE_COLUMNS = ("image_path", "image_paths")
TEXT_COLUMNS = ("report", "findings", "impression")
ID_COLUMNS = ("study_id", "patient_id")
OPTIONAL_COLUMNS = ("view", "split")
EXPECTED = "image_path (or image_paths), study_id, patient_id, report or findings/impression; optional view, split"
LAYOUT = f"a manifest file (.csv, .jsonl or .parquet) with columns {EXPECTED}"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}
LATERAL_VIEWS = {"LATERAL", "LL", "RL", "LAT", "XTABLE LATERAL", "LEFT LATERAL", "RIGHT LATERAL"}

# Report headers: the two target sections, and the ones that end a section without being a target.
_TARGET_HEADERS = {
    "FINDINGS": "findings", "FINDING": "findings", "IMPRESSION": "impression", "IMPRESSIONS": "impression",
}  # fmt: skip
_OTHER_HEADERS = (
    "INDICATION", "INDICATIONS", "CLINICAL HISTORY", "HISTORY", "REASON FOR EXAMINATION", "REASON FOR EXAM",
    "COMPARISON", "COMPARISONS", "TECHNIQUE", "EXAMINATION", "EXAM", "PROCEDURE", "RECOMMENDATION",
    "RECOMMENDATIONS", "NOTIFICATION", "ADDENDUM",
)  # fmt: skip
_HEADER = re.compile(
    r"(?i)(?<![A-Za-z])(" + "|".join(sorted({*_TARGET_HEADERS, *_OTHER_HEADERS}, key=len, reverse=True)) + r")\s*:"
)


def sections_of(report: str) -> tuple[str, str]:
    """(findings, impression) of a whole report: the text after ``FINDINGS:`` and after ``IMPRESSION:`` (either
    header in any case), each up to the next known header (INDICATION:, COMPARISON:, ...). A report without
    either header is all impression: its text before any other header."""
    matches = list(_HEADER.finditer(report))
    if not matches:
        return "", report.strip()
    parts: dict[str, list[str]] = {"findings": [], "impression": []}
    for index, match in enumerate(matches):
        section = _TARGET_HEADERS.get(match.group(1).upper())
        if section:
            end = matches[index + 1].start() if index + 1 < len(matches) else len(report)
            parts[section].append(report[match.end() : end].strip())
    if not parts["findings"] and not parts["impression"]:
        return "", report[: matches[0].start()].strip()
    return " ".join(p for p in parts["findings"] if p), " ".join(p for p in parts["impression"] if p)


def manifest_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataLayoutError(
            f"{path}: a manifest is a .csv, .jsonl or .parquet file (found '{path.suffix or 'no extension'}'); "
            f"expected {LAYOUT}"
        )
    return fmt


def _unreadable(path: Path, fmt: str, exc: Exception) -> DataLayoutError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return DataLayoutError(f"{path}: cannot be read as a {fmt.upper()} manifest ({type(exc).__name__}: {reason})")


def _records(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The manifest's column names and an iterator over its rows as dicts (one pass, nothing held)."""
    if not path.is_file():
        raise DataLayoutError(f"{path} is not a manifest file: source=manifest reads {LAYOUT}")
    fmt = manifest_format(path)
    try:
        if fmt == "csv":
            return _csv_records(path)
        if fmt == "jsonl":
            return _jsonl_records(path)
        return _parquet_records(path)
    except DataLayoutError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise _unreadable(path, fmt, exc) from None


def _csv_records(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = [name.strip() for name in next(csv.reader(handle), [])]

    def rows() -> Iterator[dict[str, Any]]:
        csv.field_size_limit(sys.maxsize)  # whole reports sit in one field
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            _ = reader.fieldnames  # reads the header row, replaced by its stripped names
            reader.fieldnames = header
            yield from reader

    return header, rows()


def _jsonl_records(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    def lines() -> Iterator[tuple[int, dict[str, Any]]]:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataLayoutError(f"{path}: line {number} is not a JSON object ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataLayoutError(f"{path}: line {number} is not a JSON object (found {type(record).__name__})")
                yield number, record

    first = next(lines(), None)
    header = [str(key).strip() for key in first[1]] if first else []
    return header, (record for _, record in lines())


def _parquet_records(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in requirements.txt
        raise DataLayoutError(f"{path}: reading a Parquet manifest needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise _unreadable(path, "parquet", exc) from None
    header = [str(name).strip() for name in parquet.schema_arrow.names]

    def rows() -> Iterator[dict[str, Any]]:
        for batch in parquet.iter_batches(batch_size=4096):
            yield from batch.to_pylist()

    return header, rows()


def _check_columns(path: Path, header: list[str]) -> None:
    found = set(header)
    missing = []
    if not found & set(IMAGE_COLUMNS):
        missing.append("image_path (or image_paths)")
    missing += [name for name in ID_COLUMNS if name not in found]
    if not found & set(TEXT_COLUMNS):
        missing.append("report (or findings/impression)")
    if missing:
        raise DataLayoutError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no columns'}; "
            f"expected {EXPECTED}"
        )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _values(value: Any) -> list[str]:
    """A cell that holds one value, a list, or ``;``-separated values."""
    if isinstance(value, (list, tuple)):
        return [text for text in (_text(v) for v in value) if text]
    return [part.strip() for part in _text(value).split(";") if part.strip()]


def _view_values(value: Any) -> list[str]:
    """A view cell: one value, a list, or ``;``-separated values, empty ones kept in their place."""
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    return [part.strip() for part in _text(value).split(";")]


def projection_of(view: str) -> tuple[str, str] | None:
    """(projection, view position) of a manifest's view value; None if it is neither frontal nor lateral."""
    upper = " ".join(view.upper().split())
    if not upper:
        return "Frontal", ""
    if upper == "FRONTAL":
        return "Frontal", ""
    if upper in LATERAL_VIEWS:
        return "Lateral", upper
    if upper.split()[0] in ("PA", "AP"):
        return "Frontal", upper
    return None


def _sections(record: dict[str, Any], columns: set[str]) -> tuple[str, str]:
    report = _text(record.get("report")) if "report" in columns else ""
    from_report = sections_of(report) if report and not {"findings", "impression"} <= columns else ("", "")
    findings = _text(record.get("findings")) if "findings" in columns else from_report[0]
    impression = _text(record.get("impression")) if "impression" in columns else from_report[1]
    return findings, impression


_BATCH = 1024
"""Manifest rows read per batch (their studies are looked up in ``StudyRows`` a batch at a time)."""
_FRONTAL, _LATERAL = 1, 2
"""Bits of a study's projections seen."""


class _Studies:
    """What is held per study while the manifest streams into the builder: its row by key (``StudyRows``), its
    patient's key and split code (to refuse a later row that names others), whether it has a patient and its
    target text, and the projections seen: 23 bytes a study, no Python object."""

    def __init__(self, builder: DatasetBuilder) -> None:
        self.builder = builder
        self.rows = StudyRows()
        self.patient_keys = array("Q")
        self.split_codes = array("b")
        self.has_patient = bytearray()
        self.has_text = bytearray()
        self.projections = bytearray()

    def add(self, key: int, uid: str, patient: str, split: str, text: str) -> int:
        row = self.rows.add(key, self.builder.study(uid, patient=patient, official=split, text=text))
        self.patient_keys.append(id_key(patient))
        self.split_codes.append(SPLIT_CODES.index(split) if split else -1)
        self.has_patient.append(bool(patient))
        self.has_text.append(bool(text))
        self.projections.append(0)
        return row

    def check_same(self, path: Path, number: int, uid: str, patient: str, split: str, row: int) -> None:
        """Refuse a row that gives the study of ``row`` another patient or another split than its first row."""
        if id_key(patient) != self.patient_keys[row]:
            raise DataLayoutError(
                f"{path}: row {number} gives study {uid} patient '{patient}', but an earlier row gave it another "
                "patient: a study has one patient"
            )
        earlier = self.split_codes[row]
        if (SPLIT_CODES.index(split) if split else -1) != earlier:
            raise DataLayoutError(
                f"{path}: row {number} puts study {uid} in split '{split}', an earlier row in "
                f"'{SPLIT_CODES[earlier] if earlier >= 0 else ''}': a study has one split"
            )


def parse_manifest(path: Path, options: ReadOptions) -> ParsedDataset:
    header, records = _records(path)
    _check_columns(path, header)
    columns = set(header)
    image_column = "image_path" if "image_path" in columns else "image_paths"
    folder = path.parent
    counts: dict[str, int] = defaultdict(int)
    builder = DatasetBuilder(folder, options.scratch)
    studies = _Studies(builder)

    def read(number: int, record: dict[str, Any]) -> tuple[int, str, str, str, dict[str, Any]] | None:
        """A row's number, study, patient and split (checked), None for a row without a study id."""
        counts["manifest_rows"] += 1
        uid = _text(record.get("study_id"))
        if not uid:
            counts["rows_without_study_id"] += 1
            return None
        split = _text(record.get("split")).lower() if "split" in columns else ""
        if split and split not in SPLIT_NAMES:
            raise DataLayoutError(
                f"{path}: row {number} (study {uid}) has split '{split}'; expected train, val or test "
                "(validate, valid, validation), or empty"
            )
        return number, uid, _text(record.get("patient_id")), SPLIT_NAMES.get(split, ""), record

    def add(batch: list[tuple[int, str, str, str, dict[str, Any]]]) -> None:
        keys = key_array((id_key(uid) for _, uid, *_ in batch), len(batch))
        for (number, uid, patient, split, record), (key, row) in zip(batch, studies.rows.rows_of(keys), strict=True):
            if row < 0:  # the study's first row: its report, patient and split are the study's
                row = studies.add(key, uid, patient, split, target_text(*_sections(record, columns), options))
            else:
                studies.check_same(path, number, uid, patient, split, row)
            add_images(record, row)
        studies.rows.merge()

    def add_images(record: dict[str, Any], row: int) -> None:
        """List a row's images and add the usable ones, each counted under the first check it fails."""
        images = _values(record.get(image_column))
        if not images:
            counts["rows_without_image"] += 1
            return
        row_views = _view_values(record.get("view")) if "view" in columns else [""]
        if len(row_views) == 1:
            row_views = row_views * len(images)
        for index, image in enumerate(images):
            counts["images_listed"] += 1
            filename = image if Path(image).is_absolute() else str(PurePosixPath(image.replace("\\", "/")))
            builder.listed(row, filename)
            view = projection_of(row_views[index]) if len(row_views) == len(images) else None
            if view is None:
                counts["images_unknown_view"] += 1
                continue
            projection, position = view
            counts["images_without_view"] += not row_views[index]
            studies.projections[row] |= _FRONTAL if projection == "Frontal" else _LATERAL
            if not (folder / filename).is_file():
                counts["images_missing_file"] += 1
            elif not studies.has_text[row]:
                counts["images_without_target"] += 1
            else:
                builder.image(row, filename, projection, position)

    numbered = enumerate(records, start=1)
    try:
        while chunk := list(islice(numbered, _BATCH)):
            add([row for row in (read(number, record) for number, record in chunk) if row is not None])
            del chunk
            release_free_memory()  # the batch's rows and the index's previous arrays: freed pages handed back
    except DataLayoutError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise _unreadable(path, manifest_format(path), exc) from None
    with_patient = array("Q", (key for key, has in zip(studies.patient_keys, studies.has_patient, strict=True) if has))
    counts["reports"] = len(studies.rows)
    counts["patients"] = distinct(with_patient)
    counts["studies_without_patient"] = len(studies.has_patient) - sum(studies.has_patient)
    counts["studies_without_target"] = len(studies.has_text) - sum(studies.has_text)
    counts["studies_in_manifest_split"] = sum(1 for code in studies.split_codes if code >= 0)
    counts["studies_frontal_only"] = studies.projections.count(_FRONTAL)
    counts["studies_lateral_only"] = studies.projections.count(_LATERAL)
    for name in ("rows_without_study_id", "rows_without_image", "images_unknown_view", "images_missing_file",
                 "images_without_target", "images_without_view"):  # fmt: skip
        counts.setdefault(name, 0)
    return builder.finish(dict(counts))


def check_manifest(path: Path) -> None:
    """DataLayoutError unless the manifest reads and has the required columns."""
    header, _ = _records(path)
    _check_columns(path, header)


MANIFEST = DatasetReader(
    layout=LAYOUT, check_layout=check_manifest, parse=parse_manifest, identity_files=lambda path: [path]
)
