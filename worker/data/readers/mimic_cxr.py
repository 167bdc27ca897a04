"""The MIMIC-CXR-JPG 2.x layout, with its reports as MIMIC-CXR's text files or as R2Gen's ``annotation.json``.

The folder (PhysioNet's MIMIC-CXR-JPG, https://physionet.org/content/mimic-cxr-jpg/, with the reports of
MIMIC-CXR, https://physionet.org/content/mimic-cxr/)::

    mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split      (split: train / validate / test)
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    files/p10/p10000032/s50414267.txt  the study's report (mimic-cxr-reports.zip unpacked over the same folder)
    annotation.json                    optional: R2Gen's MIMIC annotation; where present, the reports come from it

Either CSV may be gzipped (``.csv.gz``, as PhysioNet ships them) or not. **Which report form is read:**
``annotation.json`` in the folder means R2Gen's form (its ``report`` is the findings section, one entry per
image: ``{"train"|"val"|"test": [{"id", "study_id", "subject_id", "report", "image_path": [...], "split"}]}``,
``image_path`` relative to ``files/``); without it, the report text files are read.

**Sections of a report file** follow MIT-LCP's mimic-cxr ``txt/section_parser.py`` (``section_text``,
``normalize_section_names``) as its ``create_section_files.py`` uses them: a section starts at a line
`` HEADER:`` in capitals; header spellings are normalised (``CONCLUSION`` and ``FINDINGS AND IMPRESSION`` are
the impression, misspellings such as ``IMPRESSON`` too, headers naming the views such as ``PA AND LATERAL
VIEWS OF THE CHEST`` are the findings); empty findings or impression sections are dropped; the *last*
findings and the *last* impression section are the report's. Its per-study manual fixes
(``custom_mimic_cxr_rules``, a few dozen studies) are not applied.

**Rows** are images: the metadata CSV's rows (report files) or the annotation's image paths. Each row is
counted under the first check it fails: ``rows_not_in_split_csv`` (its dicom_id is not in the split CSV),
``rows_without_report`` (its study has no report file), ``rows_missing_file`` (no JPG), ``rows_without_target``
(the report lacks the target section; the target text is cleaned as the evaluation protocol says, under
R2Gen's with the steps its ``clean_report_mimic_cxr`` adds, and MIMIC's de-identification mark ``___`` is
removed under ours as IU-Xray's ``XXXX`` is), ``rows_unknown_view`` (a ViewPosition that is neither frontal, PA/AP, nor
lateral, LATERAL/LL, or none at all; each position is counted in ``view_position_*``). The patient is the
subject_id; the official split is the split CSV's (the annotation's own split in R2Gen's form).

Scale: the CSVs are streamed; the split CSV's dicom_ids (and, in R2Gen's form, the metadata's) are held as a
sorted array of fixed-width bytes (about 50 bytes an image, where a set of strings takes about 130); an image
is held as its path (which holds its dicom_id); a subject's id and identical report texts are held once; each
report file is read once and only its two sections are kept; the report files and images are read by a thread
pool in batches (a network file system answers many requests at once); progress is logged every 15 seconds.
The 227,835 report files are not hashed into a checkpoint's record of its data (reading them all again would
take minutes): ``identity_files`` are the two CSVs and, in R2Gen's form, annotation.json.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from worker.config import ConfigError
from worker.data.cleaning import r2gen_mimic_prepare
from worker.data.readers.base import DataLayoutError, DatasetReader, ImageRow, ParsedDataset, ReadOptions, target_text

logger = logging.getLogger(__name__)

SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
FILES_DIR = "files"
ANNOTATION_JSON = "annotation.json"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
"""The split CSV's values (train, validate, test) and the annotation's (train, val, test), as this product's."""
VIEW_PROJECTIONS = {"PA": "Frontal", "AP": "Frontal", "LATERAL": "Lateral", "LL": "Lateral"}
LAYOUT = (
    f"the MIMIC-CXR-JPG 2.x layout: {SPLIT_CSV}(.gz), {METADATA_CSV}(.gz), "
    f"{FILES_DIR}/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg, and the reports as {FILES_DIR}/pNN/pSUBJECT/sSTUDY.txt "
    f"(mimic-cxr-reports.zip) or R2Gen's {ANNOTATION_JSON}"
)
_BATCH = 2048
"""Studies read per batch of the thread pool."""
_READ_THREADS = 16
_PROGRESS_EVERY_S = 15.0


# ---- sections of a report file (MIT-LCP mimic-cxr txt/section_parser.py) ----

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_NAMES = {
    "impression": (
        "impression", "conclusion", "findings and impression", "findings/impression", "findings/ impression",
        "impresson", "imprression", "imoression", "impressoin", "imprssion", "impresion", "imperssion",
        "mpression", "impession", "ndication",
    ),
    "findings": (
        "findings", "chest, two views", "finding", "findins", "findindgs", "findgings", "findngs", "findnings",
        "finidngs", "reference findings",
    ),
    "indication": ("indication", "reason for examination", "reason for exam", "clinical indication", "idication"),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "comparison": (
        "comparison", "comparisons", "reference exam", "comparison exam", "comparison film", "comparision",
        "comparsion", "comparrison", "comparisions",
    ),
    "examination": ("examination", "exam", "type of examination"),
    "recommendations": ("recommendation(s)", "recommendations", "recommendation"),
    "wet read": ("wet read", "wetread"),
}  # fmt: skip
_SECTION_NAME = {alias: name for name, aliases in _NAMES.items() for alias in aliases}
# A header that names none of the above but contains one of these is that section; one that names the views
# or the body part describes the whole study, which the parser counts as findings.
_CONTAINED = ("impression", "findings", "history", "comparison", "addendum")
_FINDINGS_LIKE = re.compile(
    r"chest|portable|pa and lat|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|frontal view|"
    r"pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|ribs"
)


def _section_name(header: str) -> str:
    name = header.lower().strip()
    if name in _SECTION_NAME:
        return _SECTION_NAME[name]
    for main in _CONTAINED:
        if main in name:
            return main
    return "findings" if _FINDINGS_LIKE.search(name) else name


def report_sections(text: str) -> tuple[str | None, str | None]:
    """The findings and the impression of a MIMIC-CXR report file (None where it has no such section)."""
    findings = impression = None
    match = _HEADER.search(text)
    while match:
        name = _section_name(match.group(1))
        start = match.end()
        # The next header is looked for past the end of this header's line, as the MIT-LCP parser does.
        skip = text.find("\n", start)
        match = _HEADER.search(text, start + (skip - start if skip != -1 else 0))
        if name in ("findings", "impression"):
            body = text[start : match.start() if match else len(text)].strip()
            if body:  # the last non-empty section of each name wins
                if name == "findings":
                    findings = body
                else:
                    impression = body
    return findings, impression


# ---- files ----


def _csv_path(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _csv_header(path: Path, required: tuple[str, ...]) -> None:
    try:
        with _open_text(path) as handle:
            header = [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DataLayoutError(f"{path} cannot be read as a CSV ({reason}); expected {LAYOUT}") from None
    missing = [name for name in required if name not in header]
    if missing:
        raise DataLayoutError(
            f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(header) or 'none'}); expected {LAYOUT}"
        )


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The named columns of each row, streamed (the file is never held whole)."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        index = [header.index(name) for name in columns]
        width = max(index) + 1
        for row in reader:
            if len(row) >= width:
                yield tuple(row[i].strip() for i in index)


def check_layout(root: Path) -> None:
    """Raise DataLayoutError unless ``root`` holds both CSVs with their columns and the files/ folder."""
    for name, columns in ((SPLIT_CSV, SPLIT_COLUMNS), (METADATA_CSV, METADATA_COLUMNS)):
        path = _csv_path(root, name)
        if path is None:
            raise DataLayoutError(f"{root} is not a MIMIC-CXR-JPG folder: {name}(.gz) is missing (expected {LAYOUT})")
        _csv_header(path, columns)
    if not (root / FILES_DIR).is_dir():
        raise DataLayoutError(f"{root} is not a MIMIC-CXR-JPG folder: {FILES_DIR}/ is missing (expected {LAYOUT})")


def _report_path(root: Path, subject: str, study: str) -> Path:
    return root / FILES_DIR / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"


def _image_name(subject: str, study: str, dicom: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


class _Progress:
    """A log line every 15 s for a step that may take minutes (the data stage's log shows it)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            logger.info("MIMIC-CXR: %s %d of %d (%.0f s)", self.label, done, self.total, now - self.started)


# ---- parsing ----


def _id_array(ids: Iterator[str]) -> np.ndarray:
    """Ids as a sorted array of fixed-width ASCII bytes (dicom_ids are 44 characters: about 50 bytes an image,
    where a set of the strings takes about 130), built in chunks so the strings never pile up."""
    chunks: list[np.ndarray] = []
    chunk: list[bytes] = []
    for value in ids:
        chunk.append(value.encode())
        if len(chunk) == 65_536:
            chunks.append(np.array(chunk))
            chunk = []
    chunks.append(np.array(chunk, dtype="S1") if not chunk else np.array(chunk))
    width = max(array.dtype.itemsize for array in chunks)
    return np.concatenate([array.astype(f"S{width}") for array in chunks])


def _read_split(root: Path) -> tuple[np.ndarray, dict[str, str]]:
    """The dicom_ids the split CSV lists (sorted, as ``_id_array``) and each study's split (its first row's)."""
    path = _csv_path(root, SPLIT_CSV)
    assert path is not None
    study_split: dict[str, str] = {}

    def dicoms() -> Iterator[str]:
        for dicom, study, _subject, split in _csv_rows(path, ("dicom_id", "study_id", "subject_id", "split")):
            if study not in study_split:
                study_split[study] = SPLIT_NAMES.get(split.lower(), split)
            yield dicom

    listed = np.sort(_id_array(dicoms()))
    return listed, study_split


def _find(keys: np.ndarray, dicom: str) -> int:
    """The index of ``dicom`` in the sorted id array ``keys``, or -1."""
    key = dicom.encode()
    if len(key) > keys.dtype.itemsize:
        return -1
    index = int(np.searchsorted(keys, key))
    return index if index < len(keys) and keys[index] == key else -1


def _view_count_name(view: str) -> str:
    return "view_position_" + (re.sub(r"[^a-z0-9]+", "_", view.lower()).strip("_") or "none")


def _read_study(args: tuple[Path | None, list[Path]]) -> tuple[str | None, str | None, bool, list[bool]]:
    """A study's findings and impression (read from its report file, where one is given), whether the file
    exists, and whether each image exists. Runs in the reading threads."""
    report, images = args
    findings = impression = None
    has_report = report is None
    if report is not None:
        try:
            with open(report, encoding="utf-8", errors="replace") as handle:
                findings, impression = report_sections(handle.read())
            has_report = True
        except FileNotFoundError:
            pass
    return findings, impression, has_report, [os.path.exists(path) for path in images]


_DEIDENTIFIED = re.compile(r"_{2,}")


def _target(findings: str | None, impression: str | None, options: ReadOptions) -> str:
    """The target text: under R2Gen's protocol with its MIMIC-CXR steps; under ours, MIMIC's de-identification
    mark ``___`` is removed as IU-Xray's ``XXXX`` is."""
    prepare = r2gen_mimic_prepare if options.protocol == "r2gen" else (lambda text: _DEIDENTIFIED.sub(" ", text))
    return target_text(prepare(findings) if findings else None, prepare(impression) if impression else None, options)


def _parse_report_files(root: Path, options: ReadOptions) -> ParsedDataset:
    counts: dict[str, int] = defaultdict(int)
    listed, study_split = _read_split(root)
    metadata = _csv_path(root, METADATA_CSV)
    assert metadata is not None
    # The metadata rows, grouped by study in the order studies first appear: study -> (subject, [(image name,
    # view, listed in the split CSV)]); the dicom_id itself is not kept (the name holds it).
    studies: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {}
    shared: dict[str, str] = {}  # one string object per subject and per view position
    rows_read = 0
    for dicom, subject, study, view in _csv_rows(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        view = view.upper()
        counts[_view_count_name(view)] += 1
        view = shared.setdefault(view, view)
        entry = studies.get(study)
        if entry is None:
            subject = shared.setdefault(subject, subject)
            entry = studies[study] = (subject, [])
        entry[1].append((_image_name(entry[0], study, dicom), view, _find(listed, dicom) >= 0))
        rows_read += 1
    counts["metadata_rows"] = rows_read
    counts["split_csv_rows"] = len(listed)
    counts["studies"] = len(studies)
    del shared

    image_root = root / FILES_DIR
    rows: list[ImageRow] = []
    report_uids: list[str] = []
    filenames: dict[str, list[str]] = {}
    patients: dict[str, str] = {}
    official: dict[str, str] = {}
    texts: dict[str, str] = {}
    progress = _Progress("studies read", len(studies))
    order = list(studies)
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for start in range(0, len(order), _BATCH):
            batch = [(study, *studies.pop(study)) for study in order[start : start + _BATCH]]
            jobs = [
                (_report_path(root, subject, study), [image_root / name for name, _, _ in images])
                for study, subject, images in batch
            ]
            for (study, subject, images), (findings, impression, has_report, present) in zip(
                batch, pool.map(_read_study, jobs), strict=True
            ):
                filenames[study] = [name for name, _, _ in images]
                patients[study] = subject
                if study in study_split:
                    official[study] = study_split[study]
                text = ""
                if has_report:
                    report_uids.append(study)
                    counts["reports"] += 1
                    counts["reports_without_findings"] += findings is None
                    counts["reports_without_impression"] += impression is None
                    text = _target(findings, impression, options)
                    text = texts.setdefault(text, text)  # identical texts (frequent in real reports) held once
                    counts["studies_without_target"] += not text
                else:
                    counts["studies_without_report"] += 1
                for (name, view, in_split), exists in zip(images, present, strict=True):
                    _add_row(rows, counts, study, subject, name, view, text, in_split, has_report, exists)
            progress.update(start + len(batch))
    return _finish(rows, report_uids, image_root, filenames, patients, official, counts)


def _add_row(
    rows: list[ImageRow], counts: dict[str, int], study: str, subject: str, name: str, view: str, text: str,
    in_split: bool, has_report: bool, exists: bool,
) -> None:  # fmt: skip
    """Keep the image, or count it under the first check it fails."""
    if not in_split:
        counts["rows_not_in_split_csv"] += 1
    elif not has_report:
        counts["rows_without_report"] += 1
    elif not exists:
        counts["rows_missing_file"] += 1
    elif not text:
        counts["rows_without_target"] += 1
    elif view not in VIEW_PROJECTIONS:
        counts["rows_unknown_view"] += 1
    else:
        rows.append(ImageRow(study, name, VIEW_PROJECTIONS[view], text, subject, view))


def _annotation_entries(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        with path.open(encoding="utf-8") as handle:
            annotation = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataLayoutError(f"{path} is not R2Gen's annotation JSON ({type(exc).__name__}: {exc})") from None
    splits = ("train", "val", "test")
    if not isinstance(annotation, dict) or not any(isinstance(annotation.get(k), list) for k in splits):
        raise DataLayoutError(
            f"{path} is not R2Gen's annotation JSON: expected an object with train/val/test lists of "
            '{"id", "study_id", "subject_id", "report", "image_path": [...], "split"}'
        )
    for key in ("train", "val", "test"):
        for entry in annotation.pop(key, None) or []:
            yield key, entry


def _parse_annotation(root: Path, options: ReadOptions) -> ParsedDataset:
    if options.target == "impression":
        raise ConfigError(
            f"{root / ANNOTATION_JSON} (R2Gen's annotation) holds the findings section only: set data.target=findings, "
            f"or remove {ANNOTATION_JSON} from the folder to read the report files"
        )
    counts: dict[str, int] = defaultdict(int)
    listed, study_split = _read_split(root)
    metadata = _csv_path(root, METADATA_CSV)
    assert metadata is not None
    # Each image's view position, looked up by its dicom_id in a sorted id array: not a dict of strings.
    positions: dict[str, int] = {}
    codes: list[int] = []

    def dicoms() -> Iterator[str]:
        for dicom, view in _csv_rows(metadata, ("dicom_id", "ViewPosition")):
            codes.append(positions.setdefault(view.upper(), len(positions)))
            yield dicom

    ids = _id_array(dicoms())
    order = np.argsort(ids, kind="stable")
    view_keys, view_codes = ids[order], np.array(codes, dtype=np.int16)[order]
    names_of = [name for name, _ in sorted(positions.items(), key=lambda item: item[1])]
    del ids, order
    codes.clear()

    def view_of(dicom: str) -> str:
        index = _find(view_keys, dicom)
        return names_of[int(view_codes[index])] if index >= 0 else ""

    counts["metadata_rows"] = len(view_keys)
    counts["split_csv_rows"] = len(listed)

    image_root = root / FILES_DIR
    texts: dict[str, str] = {}
    filenames: dict[str, list[str]] = defaultdict(list)
    patients: dict[str, str] = {}
    official: dict[str, str] = {}
    unique: dict[str, str] = {}
    pending: list[tuple[str, str, str]] = []  # study, subject, image name
    path = root / ANNOTATION_JSON
    for key, entry in _annotation_entries(path):
        try:
            study, subject = str(entry["study_id"]), str(entry["subject_id"])
            report, images = entry["report"], entry["image_path"]
        except (KeyError, TypeError) as exc:
            raise DataLayoutError(
                f"{path}: an entry of '{key}' lacks {exc} (R2Gen's entries have id, study_id, subject_id, report, "
                "image_path, split)"
            ) from None
        counts["annotation_entries"] += 1
        if study not in texts:
            text = _target(report or None, None, options)
            texts[study] = unique.setdefault(text, text)  # identical texts held once
            patients[study] = subject = unique.setdefault(subject, subject)
            split = str(entry.get("split") or key).lower()
            official[study] = SPLIT_NAMES.get(split, split)
            counts["studies_split_differs_from_csv"] += study in study_split and study_split[study] != official[study]
        for image in images if isinstance(images, list) else [images]:
            name = str(image).removeprefix(f"{FILES_DIR}/")
            filenames[study].append(name)
            pending.append((study, patients[study], name))
    counts["reports"] = len(texts)
    counts["studies"] = len(texts)
    counts["studies_without_target"] = sum(1 for text in texts.values() if not text)
    del unique

    rows: list[ImageRow] = []
    progress = _Progress("images checked", len(pending))
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for start in range(0, len(pending), _BATCH * 4):
            batch = pending[start : start + _BATCH * 4]
            present = pool.map(os.path.exists, [image_root / name for _, _, name in batch])
            for (study, subject, name), exists in zip(batch, present, strict=True):
                dicom = name.rsplit("/", 1)[-1].removesuffix(".jpg")
                view = view_of(dicom)
                counts[_view_count_name(view)] += 1
                in_split = _find(listed, dicom) >= 0
                _add_row(rows, counts, study, subject, name, view, texts[study], in_split, True, exists)
            progress.update(start + len(batch))
    return _finish(rows, list(texts), image_root, dict(filenames), patients, official, counts)


def _finish(
    rows: list[ImageRow], report_uids: list[str], image_root: Path, filenames: dict[str, list[str]],
    patients: dict[str, str], official: dict[str, str], counts: dict[str, int],
) -> ParsedDataset:  # fmt: skip
    for name in (
        "rows_not_in_split_csv", "rows_without_report", "rows_missing_file", "rows_without_target", "rows_unknown_view",
        "studies_without_report", "studies_without_target",
    ):  # fmt: skip
        counts.setdefault(name, 0)
    counts["images_listed"] = sum(len(names) for names in filenames.values())
    counts["patients"] = len(set(patients.values()))
    frontal: set[str] = set()
    lateral: set[str] = set()
    for row in rows:
        (frontal if row.projection == "Frontal" else lateral).add(row.uid)
    counts["studies_frontal_only"] = len(frontal - lateral)
    counts["studies_lateral_only"] = len(lateral - frontal)
    return ParsedDataset.from_rows(
        rows=rows, report_uids=report_uids, image_root=image_root, filenames=filenames, patients=patients,
        official_split=official, counts=dict(counts),
    )  # fmt: skip


def parse_dataset(root: Path, options: ReadOptions) -> ParsedDataset:
    check_layout(root)
    started = time.monotonic()
    if (root / ANNOTATION_JSON).is_file():
        parsed = _parse_annotation(root, options)
        form = f"R2Gen's {ANNOTATION_JSON}"
    else:
        parsed = _parse_report_files(root, options)
        form = "report files"
    logger.info(
        "MIMIC-CXR (%s): %d usable images of %d studies read in %.1f s",
        form, len(parsed.rows), len(parsed.report_uids), time.monotonic() - started,
    )  # fmt: skip
    return parsed


def identity_files(root: Path) -> list[Path]:
    """The two CSVs and, in R2Gen's form, annotation.json (hashing the 227,835 report files would take
    minutes each time a checkpoint's data is checked)."""
    files = [_csv_path(root, SPLIT_CSV) or root / SPLIT_CSV, _csv_path(root, METADATA_CSV) or root / METADATA_CSV]
    if (root / ANNOTATION_JSON).is_file():
        files.append(root / ANNOTATION_JSON)
    return files


MIMIC_CXR = DatasetReader(layout=LAYOUT, check_layout=check_layout, parse=parse_dataset, identity_files=identity_files)
