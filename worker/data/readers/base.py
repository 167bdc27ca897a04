"""What every dataset reader returns, and the contract a new one follows.

A reader turns one dataset layout (Kaggle IU-Xray, MIMIC-CXR-JPG, CheXpert Plus, a user's manifest) into
``ParsedDataset``: a table of studies (id, patient, cleaned target text, official split) and a table of usable
images (study, path, projection, view position), as columns, plus counts of what it dropped and why.
Everything after that (view selection, the split, the image cache, training, evaluation) is the same for
every layout. A reader at scale fills a ``DatasetBuilder`` while it streams (no object per image); a small
one may build ``ImageRow`` objects and call ``ParsedDataset.from_rows``.

A reader drops a row only for the dataset's own defects (no report, no target section, a missing image file)
and counts each under the first check it fails; which views to keep is the caller's choice, applied later by
``worker.data.selection``. It raises ``DataLayoutError`` (one line: the missing file or column, and the
layout it expected) when the folder is not in its layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.config import ConfigError
from worker.data.cleaning import clean_target
from worker.data.columns import ArrayWriter, StringColumn, StringColumnWriter


class DataLayoutError(ConfigError):
    """The data folder is not in the reader's layout; the message names what is missing."""


@dataclass(frozen=True, slots=True)
class ImageRow:
    uid: str
    """The study's id: all images of a study share its report and its split."""
    filename: str
    """The image's path relative to ``ParsedDataset.image_root`` (POSIX separators)."""
    projection: str
    """Frontal or Lateral."""
    text: str
    """The cleaned target section of the study's report."""
    patient: str = ""
    """The patient's id, where the dataset has one: a patient's studies never straddle two splits."""
    view: str = ""
    """The dataset's own view position in capitals (PA, AP, LATERAL, LL...), "" where it records none."""


SPLIT_CODES = ("train", "val", "test")
"""A study's official split as a code: its index here, -1 where the dataset gives none."""
PROJECTION_CODES = ("Frontal", "Lateral")


@dataclass
class StudyTable:
    """Every study the dataset names, one row each (row = the study's index)."""

    uid: StringColumn
    patient: StringColumn
    """The patient's id, "" where the dataset has none."""
    text: StringColumn
    """The cleaned target text of the study's report ("" where it lacks the target, or has no report)."""
    official: np.ndarray
    """int8: the dataset's own split (index into SPLIT_CODES), -1 where it gives none."""
    has_report: np.ndarray
    """bool: whether the study has a report (only those are split)."""

    def __len__(self) -> int:
        return len(self.uid)


@dataclass
class ImageTable:
    """Images, one row each, pointing at their study's row."""

    study: np.ndarray
    """int32: the image's study (a row of the StudyTable)."""
    filename: StringColumn
    """The image's path relative to ``ParsedDataset.image_root`` (POSIX separators)."""
    projection: np.ndarray
    """uint8: index into PROJECTION_CODES (0 for listed images that were not checked)."""
    view: StringColumn
    """The dataset's own view position in capitals, "" where it records none."""

    def __len__(self) -> int:
        return len(self.study)

    def take(self, rows: np.ndarray) -> ImageTable:
        """These rows, in this order."""
        return ImageTable(self.study[rows], self.filename.take(rows), self.projection[rows], self.view.take(rows))


@dataclass
class ParsedDataset:
    """A dataset as columns (worker.data.columns): no Python object per image or per study, so a reader at
    MIMIC-CXR size holds a few arrays, and its strings sit in files when it is given a scratch folder."""

    image_root: Path
    """The folder image rows' filenames are relative to."""
    studies: StudyTable
    images: ImageTable
    """Usable images, in the dataset's order (decoding not checked yet)."""
    listed: ImageTable
    """Every image file the dataset names for a study, present or not (what a split file is matched against)."""
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls,
        rows: list[ImageRow],
        report_uids: list[str],
        image_root: Path,
        filenames: dict[str, list[str]] | None = None,
        patients: dict[str, str] | None = None,
        official_split: dict[str, str] | None = None,
        counts: dict[str, int] | None = None,
    ) -> ParsedDataset:
        """The columns of a reader that builds its rows as objects (the small layouts)."""
        filenames, patients, official_split = filenames or {}, patients or {}, official_split or {}
        texts = {row.uid: row.text for row in rows}
        builder = DatasetBuilder(image_root)
        index: dict[str, int] = {}
        reported = set(report_uids)
        for uid in dict.fromkeys([*report_uids, *filenames, *patients, *(row.uid for row in rows)]):
            index[uid] = builder.study(
                uid, patient=patients.get(uid, ""), official=official_split.get(uid, ""), text=texts.get(uid, ""),
                has_report=uid in reported,
            )  # fmt: skip
        for uid, names in filenames.items():
            for name in names:
                builder.listed(index[uid], name)
        for row in rows:
            builder.image(index[row.uid], row.filename, row.projection, row.view)
        return builder.finish(counts or {})

    # ---- the dataset as objects: for tests, small datasets and the split file (each builds every row) ----

    @property
    def rows(self) -> list[ImageRow]:
        uid, text, patient = self.studies.uid, self.studies.text, self.studies.patient
        images = self.images
        return [
            ImageRow(uid[s], images.filename[i], PROJECTION_CODES[p], text[s], patient[s], images.view[i])
            for i, (s, p) in enumerate(zip(images.study.tolist(), images.projection.tolist(), strict=True))
        ]

    @property
    def report_uids(self) -> list[str]:
        return [uid for uid, has in zip(self.studies.uid, self.studies.has_report.tolist(), strict=True) if has]

    @property
    def patients(self) -> dict[str, str]:
        return {uid: p for uid, p in zip(self.studies.uid, self.studies.patient, strict=True) if p}

    @property
    def official_split(self) -> dict[str, str]:
        codes = self.studies.official.tolist()
        return {uid: SPLIT_CODES[c] for uid, c in zip(self.studies.uid, codes, strict=True) if c >= 0}

    @property
    def filenames(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        uid = self.studies.uid
        for study, name in zip(self.listed.study.tolist(), self.listed.filename, strict=True):
            out.setdefault(uid[study], []).append(name)
        return out


class _Vocabulary:
    """Codes for a column with few distinct values (view positions)."""

    def __init__(self, path: Path | None) -> None:
        self.codes: dict[str, int] = {}
        self.rows = ArrayWriter("B", path)

    def add(self, value: str) -> None:
        code = self.codes.setdefault(value, len(self.codes))
        if code > 255:
            raise DataLayoutError(f"more than 256 distinct view positions (e.g. {value!r}): not a view column")
        self.rows.append(code)

    def finish(self) -> StringColumn:
        return StringColumn.from_values(list(self.codes), self.rows.finish())


class DatasetBuilder:
    """What a reader fills while it streams through a dataset: ``study`` for each study, ``listed`` for each
    image file the dataset names, ``image`` for each usable image; ``finish`` gives the ParsedDataset.
    With ``scratch`` (a folder) every column goes to files in it and the result is memory-mapped from them
    (nothing per image grows in the reader's memory); the caller removes the folder once it is done with the
    result. Without one the columns are built in memory (tests, small datasets)."""

    def __init__(self, image_root: Path, scratch: Path | None = None):
        self.image_root = image_root
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)

        def file(name: str) -> Path | None:
            return scratch / name if scratch is not None else None

        self._uid = StringColumnWriter(file("uid.bin"))
        self._patient = StringColumnWriter(file("patient.bin"))
        self._text = StringColumnWriter(file("text.bin"))
        self._official = ArrayWriter("b", file("official.i8"))
        self._has_report = ArrayWriter("b", file("report.i8"))
        self._listed_study = ArrayWriter("i", file("listed.i32"))
        self._listed_name = StringColumnWriter(file("listed.bin"))
        self._image_study = ArrayWriter("i", file("images.i32"))
        self._image_name = StringColumnWriter(file("images.bin"))
        self._projection = ArrayWriter("B", file("projection.u8"))
        self._view = _Vocabulary(file("view.u8"))

    def study(self, uid: str, *, patient: str = "", official: str = "", text: str = "", has_report: bool = True) -> int:
        """Add a study; returns its row."""
        self._uid.add(uid)
        self._patient.add(patient)
        self._text.add(text)
        self._official.append(SPLIT_CODES.index(official) if official in SPLIT_CODES else -1)
        self._has_report.append(1 if has_report else 0)
        return len(self._uid) - 1

    def listed(self, study: int, filename: str) -> None:
        self._listed_study.append(study)
        self._listed_name.add(filename)

    def image(self, study: int, filename: str, projection: str, view: str = "") -> None:
        """Add a usable image of ``study`` (a row ``study`` returned)."""
        self._image_study.append(study)
        self._image_name.add(filename)
        self._projection.append(PROJECTION_CODES.index(projection))
        self._view.add(view)

    def finish(self, counts: dict[str, int]) -> ParsedDataset:
        studies = StudyTable(
            uid=self._uid.finish(), patient=self._patient.finish(), text=self._text.finish(),
            official=self._official.finish(), has_report=self._has_report.finish().view(bool),
        )  # fmt: skip
        listed_study = self._listed_study.finish()
        no_view = StringColumn.from_values([""], np.zeros(len(listed_study), dtype=np.uint8))
        listed = ImageTable(
            study=listed_study, filename=self._listed_name.finish(),
            projection=np.zeros(len(listed_study), dtype=np.uint8), view=no_view,
        )  # fmt: skip
        images = ImageTable(
            study=self._image_study.finish(), filename=self._image_name.finish(),
            projection=self._projection.finish(), view=self._view.finish(),
        )  # fmt: skip
        return ParsedDataset(self.image_root, studies, images, listed, dict(counts))


@dataclass(frozen=True)
class ReadOptions:
    target: str
    """impression, findings, or both (``target_text``)."""
    protocol: str = "native"
    """The evaluation protocol whose cleaning the target text gets (worker.data.cleaning.clean_target)."""
    scratch: Path | None = None
    """A folder for the reader's string columns (``DatasetBuilder``); None holds them in memory."""


@dataclass(frozen=True)
class DatasetReader:
    """One layout's reader: its module's functions under the names the data stage calls."""

    layout: str
    """The layout in a few words, for error messages ("the Kaggle IU-Xray layout: ...")."""
    check_layout: Callable[[Path], None]
    """Raise DataLayoutError unless the folder (or file) holds what ``parse`` reads."""
    parse: Callable[[Path, ReadOptions], ParsedDataset]
    """The dataset's usable image rows and the counts of what was dropped."""
    identity_files: Callable[[Path], list[Path]]
    """The files whose bytes identify the dataset's studies and texts (hashed into a checkpoint's record)."""


def target_text(findings: str | None, impression: str | None, options: ReadOptions) -> str:
    """A report's target text, cleaned as the protocol says; "" when the report lacks it. ``both`` is the
    findings followed by the impression, either alone where the report has one section only."""
    if options.target == "findings":
        return clean_target(findings, options.protocol)
    if options.target == "impression":
        return clean_target(impression, options.protocol)
    parts = (clean_target(findings, options.protocol), clean_target(impression, options.protocol))
    return " ".join(part for part in parts if part)
