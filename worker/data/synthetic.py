"""Synthetic IU-Xray dataset in the exact Kaggle layout, with the real data's quirks planted.

``ensure_synthetic_dataset(root, num_studies, seed)`` writes (once)::

    root/indiana_reports.csv        uid,MeSH,Problems,image,indication,comparison,findings,impression
                                    (UTF-8 with a byte-order mark and CRLF line endings, like an Excel export)
    root/indiana_projections.csv    uid,filename,projection
    root/images/images_normalized/12_IM-0123-1001.dcm.png ...
    root/planted.json               what was planted: the ground truth the data stage's counts are checked against

Planted quirks, each in its own disjoint set of studies so the expected counts are simple:
reports without impression / without findings, frontal-only and lateral-only studies, projection rows
whose PNG is missing, PNGs that do not decode (garbage bytes, a truncated file), PNGs that are not in the
CSV, 16-bit and RGB PNGs, ``XXXX`` tokens and numbered impressions. Missing and undecodable files are
always a study's second frontal image, so no study loses its only view to them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from worker.data.layout import IMAGES_DIR, PROJECTIONS_CSV, REPORT_COLUMNS, REPORTS_CSV
from worker.data.synthetic_images import draw_frontal, draw_lateral
from worker.data.synthetic_reports import draw_conditions, write_report

GENERATOR_VERSION = 2
"""Bump when the generated data changes, so old datasets under var/ are not reused."""
PLANTED_JSON = "planted.json"
T = TypeVar("T")
_MISSING_FILES = 3
_CORRUPT_FILES = 2
_ORPHAN_FILES = 2


@dataclass
class Planted:
    """Ground truth of a generated dataset: its studies and every planted quirk."""

    num_studies: int
    seed: int
    version: int = GENERATOR_VERSION
    views: dict[str, list[str]] = field(default_factory=dict)
    """uid -> projection of each of its CSV rows, in row order."""
    filenames: dict[str, list[str]] = field(default_factory=dict)
    """uid -> filename of each of its CSV rows, in row order."""
    conditions: dict[str, list[str]] = field(default_factory=dict)
    """uid -> drawn conditions (empty: normal)."""
    missing_impression: list[str] = field(default_factory=list)
    missing_findings: list[str] = field(default_factory=list)
    frontal_only: list[str] = field(default_factory=list)
    lateral_only: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    corrupt_pngs: list[str] = field(default_factory=list)
    orphan_pngs: list[str] = field(default_factory=list)
    sixteen_bit: list[str] = field(default_factory=list)
    rgb: list[str] = field(default_factory=list)
    reports_with_xxxx: int = 0
    impressions_numbered: int = 0
    csv_with_bom: list[str] = field(default_factory=list)
    csv_with_crlf: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Planted:
        return cls(**json.loads(path.read_text()))

    def expected_counts(self, projection: str, target: str) -> dict[str, int]:
        """The counts the data stage must report for this dataset, projection filter and target section."""
        wanted = {"Frontal", "Lateral"} if projection == "both" else {projection}
        without_target = set(self.missing_impression if target == "impression" else self.missing_findings)
        rows_without_target = other_projection = undecodable = kept = sixteen_bit = rgb = 0
        kept_studies: set[str] = set()
        for uid, views in self.views.items():
            for view, name in zip(views, self.filenames[uid], strict=True):
                if name in self.missing_files:
                    continue
                if uid in without_target:
                    rows_without_target += 1
                    continue
                if view not in wanted:
                    other_projection += 1
                    continue
                # From here on the data stage decodes the file.
                sixteen_bit += name in self.sixteen_bit
                rgb += name in self.rgb
                if name in self.corrupt_pngs:
                    undecodable += 1
                else:
                    kept += 1
                    kept_studies.add(uid)
        rows = sum(len(v) for v in self.views.values())
        return {
            "reports": self.num_studies,
            "projection_rows": rows,
            "png_files": rows - len(self.missing_files) + len(self.orphan_pngs),
            "studies_without_target": len(without_target),
            "rows_missing_file": len(self.missing_files),
            "rows_without_target": rows_without_target,
            "rows_other_projection": other_projection,
            "pngs_not_in_csv": len(self.orphan_pngs),
            "images_undecodable": undecodable,
            "images_16bit_converted": sixteen_bit,
            "images_rgb_converted": rgb,
            "studies_frontal_only": len(self.frontal_only),
            "studies_lateral_only": len(self.lateral_only),
            "reports_with_xxxx": self.reports_with_xxxx,
            "impressions_numbered": self.impressions_numbered,
            "csv_with_bom": len(self.csv_with_bom),
            "csv_with_crlf": len(self.csv_with_crlf),
            "images_kept": kept,
            "studies_kept": len(kept_studies),
        }


def synthetic_dataset_name(num_studies: int, seed: int) -> str:
    """Folder name under var/data: changes with everything that changes the files."""
    return f"synthetic-v{GENERATOR_VERSION}-n{num_studies}-s{seed}"


def ensure_synthetic_dataset(root: Path, num_studies: int, seed: int) -> Planted:
    """Generate the dataset at `root` unless a complete one is there; return what was planted.

    Generation writes to a temporary sibling folder and renames it into place, so an interrupted run
    never leaves a half-written dataset that a later run would trust.
    """
    planted_path = root / PLANTED_JSON
    if planted_path.is_file():
        return Planted.load(planted_path)
    return build_beside(root, lambda tmp: generate_synthetic_dataset(tmp, num_studies, seed))


def build_beside(root: Path, build: Callable[[Path], T]) -> T:
    """``build(folder)`` into a temporary sibling of ``root``, then renamed to ``root``: an interrupted build
    never leaves a half-written dataset that a later run would trust. Returns what ``build`` returned."""
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    result = build(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first; its dataset is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _quirk_slices(num_studies: int) -> dict[str, int]:
    """How many studies each study-level quirk takes; scales with the dataset, never below a few."""
    return {
        "missing_impression": max(2, round(0.01 * num_studies)),
        "missing_findings": max(3, round(0.1 * num_studies)),
        "frontal_only": max(2, round(0.08 * num_studies)),
        "lateral_only": max(2, round(0.04 * num_studies)),
        "extra_frontal": max(_MISSING_FILES + _CORRUPT_FILES, round(0.05 * num_studies)),
        "sixteen_bit": max(2, round(0.02 * num_studies)),
        "rgb": max(2, round(0.02 * num_studies)),
    }


def generate_synthetic_dataset(root: Path, num_studies: int, seed: int) -> Planted:
    """Write a fresh dataset to `root` (which must not hold one) and return what was planted."""
    rng = np.random.default_rng(seed)
    uids = [str(i) for i in range(1, num_studies + 1)]
    groups: dict[str, list[str]] = {}
    start = 0
    shuffled = [uids[i] for i in rng.permutation(num_studies)]
    for name, size in _quirk_slices(num_studies).items():
        groups[name] = sorted(shuffled[start : start + size], key=int)
        start += size
    if start > num_studies:
        raise ValueError(f"synthetic dataset needs at least {start} studies to plant every quirk, got {num_studies}")

    images_dir = root.joinpath(*IMAGES_DIR)
    images_dir.mkdir(parents=True)
    planted = Planted(num_studies=num_studies, seed=seed)
    for name in ("missing_impression", "missing_findings", "frontal_only", "lateral_only"):
        setattr(planted, name, groups[name])
    report_rows: list[list[str]] = []
    projection_rows: list[list[str]] = []
    extra_frontal = set(groups["extra_frontal"])
    broken_budget = ["missing"] * _MISSING_FILES + ["garbage", "truncated"]

    for uid in uids:
        conditions = draw_conditions(rng)
        sides = {c: ("left" if rng.random() < 0.5 else "right") for c in ("consolidation", "nodule")}
        report = write_report(conditions, sides, rng)
        findings = "" if uid in groups["missing_findings"] else report.findings
        impression = "" if uid in groups["missing_impression"] else report.impression
        planted.reports_with_xxxx += "XXXX" in findings or "XXXX" in impression
        planted.impressions_numbered += bool(impression) and report.numbered
        planted.conditions[uid] = list(conditions)
        report_rows.append(
            [uid, report.mesh, report.problems, "Xray Chest PA and Lateral", report.indication,
             report.comparison, findings, impression]
        )  # fmt: skip

        if uid in groups["frontal_only"]:
            views = ["Frontal"]
        elif uid in groups["lateral_only"]:
            views = ["Lateral"]
        elif uid in extra_frontal:
            views = ["Frontal", "Frontal", "Lateral"]
        else:
            views = ["Frontal", "Lateral"]
        study_no = int(rng.integers(1, 10000))
        names = [f"{uid}_IM-{study_no:04d}-{1001 + 1000 * k}.dcm.png" for k in range(len(views))]
        planted.views[uid], planted.filenames[uid] = views, names
        for k, (view, name) in enumerate(zip(views, names, strict=True)):
            projection_rows.append([uid, name, view])
            pixels = _draw(view, conditions, sides, rng)
            kind = "plain"
            if uid in extra_frontal and k == 1 and broken_budget:
                kind = broken_budget.pop(0)
            elif k == 0 and uid in groups["sixteen_bit"]:
                kind = "sixteen_bit"
            elif k == 0 and uid in groups["rgb"]:
                kind = "rgb"
            _write_png(images_dir / name, pixels, kind, planted)

    for i in range(_ORPHAN_FILES):
        name = f"{num_studies + 1 + i}_IM-9999-1001.dcm.png"
        _write_png(images_dir / name, _draw("Frontal", (), {}, rng), "plain", planted)
        planted.orphan_pngs.append(name)

    _write_csv(root / REPORTS_CSV, list(REPORT_COLUMNS), report_rows, bom=True, crlf=True)
    _write_csv(root / PROJECTIONS_CSV, ["uid", "filename", "projection"], projection_rows, bom=False, crlf=False)
    planted.csv_with_bom, planted.csv_with_crlf = [REPORTS_CSV], [REPORTS_CSV]
    planted.save(root / PLANTED_JSON)
    return planted


def _draw(view: str, conditions: tuple[str, ...], sides: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    width, height = (int(v) for v in rng.integers(96, 161, size=2))
    draw = draw_frontal if view == "Frontal" else draw_lateral
    return draw(conditions, sides, width, height, rng)


def _write_png(path: Path, pixels: np.ndarray, kind: str, planted: Planted) -> None:
    """Write one image as a plain 8-bit grayscale PNG, or as one of the planted file quirks."""
    if kind == "missing":
        planted.missing_files.append(path.name)
        return
    if kind == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
        planted.corrupt_pngs.append(path.name)
        return
    if kind == "sixteen_bit":
        # Full 16-bit range, as a DICOM export would write; 257 maps 255 onto 65535 exactly.
        Image.fromarray(pixels.astype(np.uint16) * 257).save(path)
        planted.sixteen_bit.append(path.name)
        return
    if kind == "rgb":
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(path)
        planted.rgb.append(path.name)
        return
    Image.fromarray(pixels).save(path)
    if kind == "truncated":  # the header reads fine, the pixel data ends early
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        planted.corrupt_pngs.append(path.name)


def _write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool, crlf: bool) -> None:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(header)
        writer.writerows(rows)
