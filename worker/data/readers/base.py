"""What every dataset reader returns, and the contract a new one follows.

A reader turns one dataset layout (Kaggle IU-Xray, MIMIC-CXR-JPG, CheXpert Plus, a user's manifest) into
``ParsedDataset``: one ``ImageRow`` per usable image, with its study, patient, projection, view position and
cleaned target text, plus counts of what it dropped and why. Everything after that (view selection, the
split, the image cache, training, evaluation) is the same for every layout.

A reader drops a row only for the dataset's own defects (no report, no target section, a missing image file)
and counts each under the first check it fails; which views to keep is the caller's choice, applied later by
``worker.data.selection``. It raises ``DataLayoutError`` (one line: the missing file or column, and the
layout it expected) when the folder is not in its layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import ConfigError
from worker.data.cleaning import clean_target


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


@dataclass
class ParsedDataset:
    rows: list[ImageRow]
    """Usable image rows, in the dataset's order (decoding not checked yet)."""
    report_uids: list[str]
    """Every report's study id, in the dataset's order: what the split divides."""
    image_root: Path
    """The folder image rows' filenames are relative to."""
    filenames: dict[str, list[str]] = field(default_factory=dict)
    """uid -> every image file name the dataset gives the study (present or not)."""
    patients: dict[str, str] = field(default_factory=dict)
    """uid -> patient id, for datasets that have patient ids (empty otherwise)."""
    official_split: dict[str, str] = field(default_factory=dict)
    """uid -> train/val/test of the dataset's own split, for datasets that have one (empty otherwise)."""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadOptions:
    target: str
    """impression, findings, or both (``target_text``)."""
    protocol: str = "native"
    """The evaluation protocol whose cleaning the target text gets (worker.data.cleaning.clean_target)."""


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
