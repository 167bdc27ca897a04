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

Scale: nothing is held per image but a few bytes in arrays, and no Python object outlives its batch. The split
CSV is streamed into the 8-byte blake2b digests of its dicom_ids (a sorted array) and each study's split (a
sorted array of study keys and one of split codes); a study or subject id that is a plain decimal number (all of
MIMIC's) is its own key, any other id its digest (as are the metadata's dicom_ids in R2Gen's form, to look up
their view positions). Two ids share a digest with a chance of about 1e-8 at 377,110 images (an image the split
CSV leaves out would then count as listed in it). The metadata CSV is read twice, streamed: first for its view
positions and to find any study whose rows are not consecutive (MIMIC-CXR-JPG's are; only such a study's rows
are held, to be read where it first appears), then study by study in the order studies first appear: each
study's report file is read once and only its target text is kept, and the study, its listed images and its
usable ones go to a ``DatasetBuilder`` (columns whose strings go to files in ``ReadOptions.scratch``). The
report files and images are read by a thread pool in batches of studies (a network file system answers many
requests at once); progress is logged every 15 seconds. R2Gen's annotation.json is streamed entry by entry (ijson).
The 227,835 report files are not hashed into a checkpoint's record of its data (reading them all again would
take minutes): ``identity_files`` are the two CSVs and, in R2Gen's form, annotation.json.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
import time
from array import array
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import chain, islice
from pathlib import Path

import ijson
import numpy as np

from worker.config import ConfigError
from worker.data.cleaning import r2gen_mimic_prepare
from worker.data.heap import release_free_memory
from worker.data.readers.base import (
    PROJECTION_CODES,
    SPLIT_CODES,
    DataLayoutError,
    DatasetBuilder,
    DatasetReader,
    ParsedDataset,
    ReadOptions,
    target_text,
)
from worker.data.readers.keys import StudyRows, digest, distinct, id_key, key_array, lookup

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
_BATCH = 1024
"""Studies read per batch of the thread pool (the entries of the annotation form: as many)."""
_READ_THREADS = 16
_CHUNK = 32
"""Studies per task of a reading thread (a future per 32 studies, not one each)."""
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


def _report_path(root: Path, subject: str, study: str) -> str:
    return f"{root}/{FILES_DIR}/p{subject[:2]}/p{subject}/s{study}.txt"


def _image_name(subject: str, study: str, dicom: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


class _Progress:
    """A log line every 15 s for a step that may take minutes (the data stage's log shows it)."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            of = "" if self.total is None else f" of {self.total}"
            logger.info("MIMIC-CXR: %s %d%s (%.0f s)", self.label, done, of, now - self.started)


# ---- parsing ----


class _SplitCsv:
    """The split CSV, held as arrays: the digests of the dicom_ids it lists (sorted, 8 bytes an image) and each
    study's split (its first row's) as a code by study key (9 bytes a study)."""

    def __init__(self, root: Path) -> None:
        path = _csv_path(root, SPLIT_CSV)
        assert path is not None
        dicoms, keys, codes = array("Q"), array("Q"), array("i")
        names: dict[str, int] = {name: code for code, name in enumerate(SPLIT_CODES)}
        last = None
        for dicom, study, _subject, split in _csv_rows(path, SPLIT_COLUMNS):
            dicoms.append(digest(dicom))
            if study != last:  # a study's rows are consecutive: one entry per run of them, the first one wins
                last = study
                name = SPLIT_NAMES.get(split.lower(), split)
                keys.append(id_key(study))
                codes.append(names.setdefault(name, len(names)))
        self.rows = len(dicoms)
        self.dicoms = np.frombuffer(dicoms, dtype=np.uint64)  # over the array's buffer, sorted in place
        self.dicoms.sort()
        self.study_keys, first = np.unique(np.frombuffer(keys, dtype=np.uint64), return_index=True)
        self.study_codes = np.frombuffer(codes, dtype=np.int32)[first].astype(np.int8 if len(names) < 128 else np.int32)
        self.names = list(names)
        """The split of each code: train, val, test, then any other value the CSV holds."""

    def listed(self, dicoms: list[str]) -> np.ndarray:
        """bool per dicom_id: whether the split CSV lists it."""
        return lookup(self.dicoms, key_array(map(digest, dicoms), len(dicoms))) >= 0

    def splits(self, studies: list[str]) -> list[str]:
        """Each study's split, "" where the split CSV does not name the study."""
        index = lookup(self.study_keys, key_array(map(id_key, studies), len(studies)))
        return [self.names[self.study_codes[i]] if i >= 0 else "" for i in index.tolist()]


def _view_count_name(view: str) -> str:
    return "view_position_" + (re.sub(r"[^a-z0-9]+", "_", view.lower()).strip("_") or "none")


def _read_study(
    job: tuple[str, list[str]], options: ReadOptions
) -> tuple[bool, bool | None, bool | None, str, list[bool]]:
    """Whether a study's report file exists, whether it has findings and an impression, its target text, and
    whether each image exists. Runs in the reading threads; only the target text is kept of a report."""
    report, images = job
    try:
        with open(report, encoding="utf-8", errors="replace") as handle:
            findings, impression = report_sections(handle.read())
    except FileNotFoundError:
        return False, None, None, "", [os.path.exists(path) for path in images]
    text = _target(findings, impression, options)
    return True, findings is not None, impression is not None, text, [os.path.exists(path) for path in images]


def _read_studies(
    jobs: list[tuple[str, list[str]]], options: ReadOptions
) -> list[tuple[bool, bool | None, bool | None, str, list[bool]]]:
    return [_read_study(job, options) for job in jobs]


_DEIDENTIFIED = re.compile(r"_{2,}")


def _target(findings: str | None, impression: str | None, options: ReadOptions) -> str:
    """The target text: under R2Gen's protocol with its MIMIC-CXR steps; under ours, MIMIC's de-identification
    mark ``___`` is removed as IU-Xray's ``XXXX`` is."""
    prepare = r2gen_mimic_prepare if options.protocol == "r2gen" else (lambda text: _DEIDENTIFIED.sub(" ", text))
    return target_text(prepare(findings) if findings else None, prepare(impression) if impression else None, options)


_Row = tuple[str, str, str, str]
"""A metadata row's dicom_id, subject_id, study_id and ViewPosition."""


def _scan_metadata(path: Path, counts: dict[str, int]) -> tuple[int, dict[int, list[_Row]]]:
    """The metadata CSV's first pass: counts its rows and their view positions; returns the number of studies
    and, as an empty list each, the keys of the studies whose rows are not all consecutive (MIMIC-CXR-JPG's
    are), whose rows ``_study_runs`` then gathers first."""
    runs = array("Q")  # the study key of each run of consecutive rows of one study
    names: dict[str, str] = {}
    last = None
    rows = 0
    for study, view in _csv_rows(path, ("study_id", "ViewPosition")):
        name = names.get(view)
        if name is None:
            name = names[view] = _view_count_name(view.upper())
        counts[name] += 1
        rows += 1
        if study != last:
            last = study
            runs.append(id_key(study))
    counts["metadata_rows"] = rows
    keys = np.frombuffer(runs, dtype=np.uint64)  # over the array's buffer, sorted in place
    keys.sort()
    again = keys[1:] == keys[:-1]  # a run of a study seen in an earlier run
    scattered = {key: [] for key in keys[1:][again].tolist()}
    return len(keys) - int(np.count_nonzero(again)), scattered


def _study_runs(path: Path, scattered: dict[int, list[_Row]]) -> Iterator[list[_Row]]:
    """Each study's metadata rows, in the order studies first appear in the CSV: a run of consecutive rows of
    one study at a time, so that no more than a batch of studies is ever held. A study in ``scattered`` comes
    whole where it first appears (its rows gathered by a pass before), and its later runs are skipped."""
    if scattered:
        for row in _csv_rows(path, METADATA_COLUMNS):
            held = scattered.get(id_key(row[2]))
            if held is not None:
                held.append(row)
    run: list[_Row] = []
    last = None
    skip = False
    for row in _csv_rows(path, METADATA_COLUMNS):
        if row[2] != last:
            if run:
                yield run
                run = []
            last = row[2]
            held = scattered.get(id_key(last)) if scattered else None
            skip = held is not None
            if held:
                yield held[:]
                held.clear()  # its later runs find it empty
        if not skip:
            run.append(row)
    if run:
        yield run


def _dropped(in_split: bool, has_report: bool, exists: bool, has_text: bool, view: str) -> str | None:
    """The count an image is dropped under (the first check it fails), None where it is kept."""
    if not in_split:
        return "rows_not_in_split_csv"
    if not has_report:
        return "rows_without_report"
    if not exists:
        return "rows_missing_file"
    if not has_text:
        return "rows_without_target"
    if view not in VIEW_PROJECTIONS:
        return "rows_unknown_view"
    return None


def _add_studies(
    batch: list[list[_Row]], root: Path, options: ReadOptions, split: _SplitCsv, pool: ThreadPoolExecutor,
    builder: DatasetBuilder, counts: dict[str, int], patients: array,
) -> None:  # fmt: skip
    """Read a batch of studies into the builder: their report files and images in the reading threads, the
    study, its listed images and its usable ones here. Nothing of the batch is held after it."""
    image_root = root / FILES_DIR
    names = [[_image_name(run[0][1], run[0][2], row[0]) for row in run] for run in batch]
    jobs = [
        (_report_path(root, run[0][1], run[0][2]), [f"{image_root}/{name}" for name in study_names])
        for run, study_names in zip(batch, names, strict=True)
    ]
    listed = iter(split.listed([row[0] for run in batch for row in run]).tolist())
    officials = split.splits([run[0][2] for run in batch])
    chunks = [jobs[start : start + _CHUNK] for start in range(0, len(jobs), _CHUNK)]
    read = chain.from_iterable(pool.map(partial(_read_studies, options=options), chunks))
    for run, study_names, official, (has_report, findings, impression, text, present) in zip(
        batch, names, officials, read, strict=True
    ):
        _dicom, subject, study, _view = run[0]
        if has_report:
            counts["reports"] += 1
            counts["reports_without_findings"] += not findings
            counts["reports_without_impression"] += not impression
            counts["studies_without_target"] += not text
        else:
            counts["studies_without_report"] += 1
        row = builder.study(study, patient=subject, official=official, text=text, has_report=has_report)
        patients.append(id_key(subject))
        for (_, _, _, view), name, exists in zip(run, study_names, present, strict=True):
            view = view.upper()
            builder.listed(row, name)
            dropped = _dropped(next(listed), has_report, exists, bool(text), view)
            if dropped:
                counts[dropped] += 1
            else:
                builder.image(row, name, VIEW_PROJECTIONS[view], view)


def _parse_report_files(root: Path, options: ReadOptions) -> ParsedDataset:
    counts: dict[str, int] = defaultdict(int)
    split = _SplitCsv(root)
    metadata = _csv_path(root, METADATA_CSV)
    assert metadata is not None
    studies, scattered = _scan_metadata(metadata, counts)
    counts["split_csv_rows"] = split.rows
    counts["studies"] = studies

    image_root = root / FILES_DIR
    builder = DatasetBuilder(image_root, options.scratch)
    patients = array("Q")  # each study's subject key, to count the patients
    progress = _Progress("studies read", studies)
    runs = _study_runs(metadata, scattered)
    done = 0
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        while batch := list(islice(runs, _BATCH)):
            _add_studies(batch, root, options, split, pool, builder, counts, patients)
            done += len(batch)
            progress.update(done)
    del split, batch
    patients_count = distinct(patients)
    del patients
    parsed = builder.finish({})
    del builder  # the dataset holds its columns now
    return _finish(parsed, counts, patients_count)


ANNOTATION_LISTS = ("train", "val", "test")
ANNOTATION_ENTRY = '{"id", "study_id", "subject_id", "report", "image_path": [...], "split"}'


def _not_annotation(path: Path, reason: str | Exception) -> DataLayoutError:
    if isinstance(reason, Exception):  # yajl's message goes on to quote the file around the error: not shown
        reason = f"{type(reason).__name__}: {(str(reason).splitlines() or [''])[0]}"
    return DataLayoutError(
        f"{path} is not R2Gen's annotation JSON ({reason}): expected an object with train/val/test lists of "
        f"{ANNOTATION_ENTRY}"
    )


def _annotation_entries(path: Path) -> Iterator[tuple[str, dict]]:
    """Each entry of R2Gen's annotation with its list's name, streamed by ijson: one pass over the file per list, and
    no more than one entry held at a time (with ``json.load`` the data stage peaked at 398 MB on a synthetic
    377,110-image folder, bench/RESULTS.md). A file that breaks off or stops being JSON midway fails there, after
    the entries before it were read (the data stage's scratch folder holds them, and goes)."""
    try:
        with path.open("rb") as handle:
            first = next(ijson.parse(handle), None)
    except (OSError, UnicodeDecodeError, ijson.JSONError) as exc:
        raise _not_annotation(path, exc) from None
    if first != ("", "start_map", None):
        raise _not_annotation(path, "it is not a JSON object")
    entries = 0
    for key in ANNOTATION_LISTS:
        try:
            with path.open("rb") as handle:
                for entry in ijson.items(handle, f"{key}.item", use_float=True):
                    entries += 1
                    yield key, entry
        except (OSError, UnicodeDecodeError, ijson.JSONError) as exc:
            raise _not_annotation(path, exc) from None
    if not entries:
        raise _not_annotation(path, "no entry in a train, val or test list")


class _ViewPositions:
    """The metadata CSV's view position of each dicom_id: the digests sorted (8 bytes an image) and a code each."""

    def __init__(self, path: Path) -> None:
        positions: dict[str, int] = {}
        keys, codes = array("Q"), array("i")
        for dicom, view in _csv_rows(path, ("dicom_id", "ViewPosition")):
            keys.append(digest(dicom))
            codes.append(positions.setdefault(view.upper(), len(positions)))
        self.rows = len(keys)
        order = np.argsort(np.frombuffer(keys, dtype=np.uint64), kind="stable")  # equal ids: the first row's
        self.keys = np.frombuffer(keys, dtype=np.uint64)[order]
        narrow = np.int16 if len(positions) < 2**15 else np.int32
        self.codes = np.frombuffer(codes, dtype=np.int32)[order].astype(narrow)
        self.names = list(positions)

    def of(self, dicoms: list[str]) -> list[str]:
        """Each dicom_id's view position, "" where the metadata CSV has no row for it."""
        index = lookup(self.keys, key_array(map(digest, dicoms), len(dicoms)))
        return [self.names[self.codes[i]] if i >= 0 else "" for i in index.tolist()]


_Entry = tuple[str, str, str, list, str]
"""An annotation entry's study_id, subject_id, report, image paths and split."""


def _entry(path: Path, key: str, entry: dict) -> _Entry:
    try:
        study, subject = str(entry["study_id"]), str(entry["subject_id"])
        report, images = entry["report"], entry["image_path"]
    except (KeyError, TypeError) as exc:
        raise DataLayoutError(
            f"{path}: an entry of '{key}' lacks {exc} (R2Gen's entries have id, study_id, subject_id, "
            "report, image_path, split)"
        ) from None
    name = str(entry.get("split") or key).lower()
    return study, subject, report or "", images if isinstance(images, list) else [images], SPLIT_NAMES.get(name, name)


def _parse_annotation(root: Path, options: ReadOptions) -> ParsedDataset:
    if options.target == "impression":
        raise ConfigError(
            f"{root / ANNOTATION_JSON} (R2Gen's annotation) holds the findings section only: set data.target=findings, "
            f"or remove {ANNOTATION_JSON} from the folder to read the report files"
        )
    counts: dict[str, int] = defaultdict(int)
    split = _SplitCsv(root)
    metadata = _csv_path(root, METADATA_CSV)
    assert metadata is not None
    views = _ViewPositions(metadata)
    counts["metadata_rows"] = views.rows
    counts["split_csv_rows"] = split.rows

    image_root = root / FILES_DIR
    builder = DatasetBuilder(image_root, options.scratch)
    patients = array("Q")  # each study's subject key, to count the patients
    studies = StudyRows()
    has_text = bytearray()  # per study row: whether its target text is not empty
    image_counts: dict[str, int] = defaultdict(int)  # counted after the studies', as the images are checked
    view_names: dict[str, str] = {}
    pending: list[tuple[int, str]] = []  # study row, image name: the images not checked yet
    path = root / ANNOTATION_JSON
    entries = _annotation_entries(path)
    progress = _Progress("annotation entries read")

    def add(batch: list[_Entry]) -> None:
        """Add a batch's new studies and list its images (pending their checks)."""
        keys = key_array((id_key(study) for study, *_ in batch), len(batch))
        in_csv = split.splits([study for study, *_ in batch])
        for (study, subject, report, images, official), (key, row), csv_split in zip(
            batch, studies.rows_of(keys), in_csv, strict=True
        ):
            if row < 0:  # the study's first entry: its report is the study's
                text = _target(report or None, None, options)
                counts["studies_split_differs_from_csv"] += bool(csv_split) and csv_split != official
                row = studies.add(key, builder.study(study, patient=subject, official=official, text=text))
                patients.append(id_key(subject))
                has_text.append(bool(text))
            for image in images:
                name = str(image).removeprefix(f"{FILES_DIR}/")
                builder.listed(row, name)
                pending.append((row, name))
        studies.merge()

    def check(pool: ThreadPoolExecutor) -> None:
        """Check the pending images (in the reading threads) and add the usable ones."""
        names = [name for _, name in pending]
        dicoms = [name.rsplit("/", 1)[-1].removesuffix(".jpg") for name in names]
        present = pool.map(os.path.exists, [f"{image_root}/{name}" for name in names])
        listed = split.listed(dicoms).tolist()
        for (row, name), exists, in_split, view in zip(pending, present, listed, views.of(dicoms), strict=True):
            count_name = view_names.get(view)
            if count_name is None:
                count_name = view_names[view] = _view_count_name(view)
            image_counts[count_name] += 1
            dropped = _dropped(in_split, True, exists, bool(has_text[row]), view)
            if dropped:
                image_counts[dropped] += 1
            else:
                builder.image(row, name, VIEW_PROJECTIONS[view], view)
        pending.clear()

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        while batch := [_entry(path, key, entry) for key, entry in islice(entries, _BATCH)]:
            counts["annotation_entries"] += len(batch)
            add(batch)
            check(pool)
            progress.update(counts["annotation_entries"])
            # Each batch frees its entries and the study index's previous arrays (MBs); glibc would keep the
            # freed pages resident, scattered through the heap: 5 MB more at 377,110 images without this.
            release_free_memory()
    counts["reports"] = counts["studies"] = len(studies)
    counts["studies_without_target"] = len(has_text) - sum(has_text)
    counts.update(image_counts)
    return _finish(builder.finish({}), counts, distinct(patients))


def _finish(parsed: ParsedDataset, counts: dict[str, int], patients: int) -> ParsedDataset:
    """The dataset with the counts, and the counts derived from its arrays."""
    for name in (
        "rows_not_in_split_csv", "rows_without_report", "rows_missing_file", "rows_without_target", "rows_unknown_view",
        "studies_without_report", "studies_without_target",
    ):  # fmt: skip
        counts.setdefault(name, 0)
    counts["images_listed"] = len(parsed.listed)
    counts["patients"] = patients
    frontal = np.zeros(len(parsed.studies), dtype=bool)
    lateral = np.zeros(len(parsed.studies), dtype=bool)
    images, chunk = parsed.images, 65_536
    for start in range(0, len(images), chunk):
        study, projection = images.study[start : start + chunk], images.projection[start : start + chunk]
        frontal[study[projection == PROJECTION_CODES.index("Frontal")]] = True
        lateral[study[projection == PROJECTION_CODES.index("Lateral")]] = True
    counts["studies_frontal_only"] = int(np.count_nonzero(frontal & ~lateral))
    counts["studies_lateral_only"] = int(np.count_nonzero(lateral & ~frontal))
    parsed.counts = dict(counts)
    return parsed


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
        form, len(parsed.images), int(np.count_nonzero(parsed.studies.has_report)), time.monotonic() - started,
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
