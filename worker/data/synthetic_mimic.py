"""A synthetic MIMIC-CXR-JPG folder in the layout ``worker.data.readers.mimic_cxr`` reads, with defects planted.

``generate_mimic(root, images=N, form="reports"|"annotation")`` writes::

    root/mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split   (train / validate / test by patient)
    root/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...  (MIMIC's 12 columns)
    root/files/p1N/p1NNNNNNN/s5NNNNNNN/<dicom_id>.jpg      small stand-in radiographs (synthetic_images)
    root/files/p1N/p1NNNNNNN/s5NNNNNNN.txt                 the report (form="reports")
    root/annotation.json                                   R2Gen's MIMIC annotation instead (form="annotation")
    root/planted.json                                      what was planted: the ground truth tests count against

Exactly N images. Patients have one to six studies; a study has a frontal film (PA or AP) and usually a
lateral (LATERAL, sometimes LL); a few carry a film of another view position (AP AXIAL, or none recorded).
Planted, each in its own studies: studies without a report (no report file; in R2Gen's form, no entry, as
R2Gen leaves such studies out), reports without findings (in R2Gen's form, an empty report), reports without
an impression, missing JPGs and images the split CSV leaves out (a study's second film, so no study loses its
frontal one), and header spellings the MIMIC-CXR section parser maps (CONCLUSION, IMPRESSON, a
findings header naming the views).

Each combination of view and drawn findings is drawn in ``variants`` versions (8) and the JPEG bytes reused,
written by a process pool: the full 377,110 images at 32 px take minutes, most of it file creation.
``python -m worker.data.synthetic_mimic OUT --images N [--form annotation] [--size 32] [--workers K]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from worker.data.synthetic_images import draw_frontal, draw_lateral
from worker.data.synthetic_reports import draw_conditions, write_report

PLANTED_JSON = "planted.json"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
METADATA_HEADER = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
"""The metadata CSV's columns, as MIMIC-CXR-JPG 2.0.0 ships them."""
SPLIT_WEIGHTS = (0.8, 0.1, 0.1)
"""Patients in train / validate / test (MIMIC's own split is 98/1/1; small copies need larger val and test)."""
# Study compositions (view positions) and their weights; the last two carry a film of another position.
_COMPOSITIONS = (
    (("PA", "LATERAL"), 0.55), (("AP",), 0.30), (("AP", "LATERAL"), 0.07), (("PA", "LL"), 0.04),
    (("PA",), 0.02), (("PA", "LATERAL", "AP AXIAL"), 0.01), (("AP", ""), 0.01),
)  # fmt: skip
_DEFECTS = ("no_report", "no_findings", "no_impression", "missing_image", "not_in_split_csv")
_HEADER_VARIANTS = ("CONCLUSION", "IMPRESSON", "PA AND LATERAL VIEWS OF THE CHEST")


@dataclass
class MimicPlanted:
    """Ground truth of a generated folder: totals, every planted defect, and (small folders) every study."""

    images: int
    seed: int
    form: str
    studies: int = 0
    patients: int = 0
    defects: dict[str, list[str]] = field(default_factory=dict)
    """Defect -> study ids (no_report, no_findings, no_impression) or dicom ids (missing_image, not_in_split_csv)."""
    header_variants: dict[str, list[str]] = field(default_factory=dict)
    """Unusual header -> study ids whose report uses it."""
    view_positions: dict[str, int] = field(default_factory=dict)
    """ViewPosition ("" for none) -> images."""
    split_studies: dict[str, int] = field(default_factory=dict)
    """Official split (train / val / test) -> studies."""
    study_records: dict[str, dict] = field(default_factory=dict)
    """study id -> {patient, split, images: [[dicom_id, view], ...]} (only with record_studies)."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> MimicPlanted:
        return cls(**json.loads(path.read_text()))


def _dicom_id(seed: int, index: int) -> str:
    digest = hashlib.sha1(f"{seed}:{index}".encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _report_text(findings: str | None, impression: str | None, indication: str, views: tuple[str, ...],
                 findings_header: str, impression_header: str) -> str:  # fmt: skip
    """A report file as MIMIC-CXR writes them: a title, then sections `` HEADER:`` with text wrapped at 78
    columns, each line indented by one space, and ___ where a name or date was removed."""

    def section(header: str, text: str) -> str:
        body = "\n ".join(_wrap(text))
        return f" {header}:\n \n {body}\n \n"

    kind = "PA AND LAT" if len(views) > 1 else "PORTABLE AP" if views[0] == "AP" else "PA"
    parts = [
        "                                 FINAL REPORT\n",
        f" EXAMINATION:  CHEST ({kind})\n \n",
        f" INDICATION:  ___ {indication.replace('XXXX', '___')}\n \n",
        " TECHNIQUE:  Chest radiographs.\n \n",
        " COMPARISON:  ___\n \n",
    ]
    if findings is not None:
        parts.append(section(findings_header, findings.replace("XXXX", "___")))
    if impression is not None:
        parts.append(section(impression_header, impression.replace("XXXX", "___")))
    return "".join(parts)


@dataclass(frozen=True)
class _ImageJob:
    path: str
    view: str
    conditions: tuple[str, ...]
    sides: tuple[tuple[str, str], ...]
    seed: int


_STOCK: dict[tuple, bytes] = {}
"""JPEG bytes per (view, conditions, sides, size, variant), drawn once per process."""


def _jpeg(job: _ImageJob, size: int, variants: int) -> bytes:
    lateral = job.view in ("LATERAL", "LL")
    key = (lateral, job.conditions, job.sides, size, job.seed % variants)
    data = _STOCK.get(key)
    if data is None:
        rng = np.random.default_rng(key[-1] + 1000 * size)
        pixels = (draw_lateral if lateral else draw_frontal)(job.conditions, dict(job.sides), size, size, rng)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        data = _STOCK[key] = buffer.getvalue()
    return data


def _draw_images(jobs: list[_ImageJob], size: int, variants: int) -> int:
    """Write one batch of JPGs (runs in the pool); returns how many it wrote. Each combination of view and
    drawn findings is drawn in ``variants`` versions once per process and its bytes reused: writing, not
    drawing, is then the cost of a 377,110-image folder."""
    made: set[str] = set()
    for job in jobs:
        folder = os.path.dirname(job.path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        with open(job.path, "wb") as handle:
            handle.write(_jpeg(job, size, variants))
    return len(jobs)


def _wrap(text: str, width: int = 76) -> list[str]:
    """textwrap.wrap for plain words, several times faster (a report file per study at 227k studies)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def _defect_quota(studies: int) -> dict[str, int]:
    return {
        "no_report": max(2, round(0.005 * studies)),
        "no_findings": max(3, round(0.05 * studies)),
        "no_impression": max(2, round(0.03 * studies)),
        "missing_image": max(3, round(0.002 * studies)),
        "not_in_split_csv": max(2, round(0.002 * studies)),
    }


def _plan_studies(images: int, rng: np.random.Generator) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(patient index, view positions) per study, in patient order, until exactly ``images`` images."""
    views = [v for v, _ in _COMPOSITIONS]
    weights = np.array([w for _, w in _COMPOSITIONS])
    weights /= weights.sum()
    left, patient = images, 0
    while left > 0:
        for _ in range(int(rng.integers(1, 7)) if rng.random() < 0.6 else 1):
            if left <= 0:
                break
            composition = views[int(rng.choice(len(views), p=weights))][:left]
            left -= len(composition)
            yield patient, composition
        patient += 1


def generate_mimic(
    root: Path, images: int, *, seed: int = 0, form: str = "reports", size: int = 48, workers: int = 1,
    variants: int = 8, record_studies: bool | None = None, quiet: bool = True,
) -> MimicPlanted:  # fmt: skip
    """Write a fresh folder at ``root`` (written under a temporary name, renamed into place when complete)."""
    if form not in ("reports", "annotation"):
        raise ValueError(f"form must be reports or annotation, not {form!r}")
    if images < 40:
        raise ValueError(f"a synthetic MIMIC-CXR folder needs at least 40 images to plant every defect, got {images}")
    record_studies = images <= 50_000 if record_studies is None else record_studies
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    plan = list(_plan_studies(images, rng))
    # The defects that drop an image take a study's second film, so the study keeps its frontal one.
    with_second = [i for i, (_, views) in enumerate(plan) if len(views) >= 2]
    quota = _defect_quota(len(plan))
    order = [int(i) for i in rng.permutation(len(plan))]
    chosen: dict[int, str] = {}
    for defect in ("missing_image", "not_in_split_csv"):
        picks = [i for i in (with_second[int(j)] for j in rng.permutation(len(with_second))) if i not in chosen]
        chosen.update((i, defect) for i in picks[: quota[defect]])
    for defect in ("no_report", "no_findings", "no_impression"):
        picks = [i for i in order if i not in chosen][: quota[defect]]
        chosen.update((i, defect) for i in picks)
    variant_studies = [i for i in order if i not in chosen][: 3 * len(_HEADER_VARIANTS)]
    variant_of = {i: _HEADER_VARIANTS[k % len(_HEADER_VARIANTS)] for k, i in enumerate(variant_studies)}

    planted = MimicPlanted(images=images, seed=seed, form=form, studies=len(plan))
    planted.defects = {name: [] for name in _DEFECTS}
    planted.header_variants = {name: [] for name in _HEADER_VARIANTS}
    patient_split: dict[int, str] = {}
    split_names = ("train", "validate", "test")
    annotation: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    view_counts: dict[str, int] = {}
    split_studies = {"train": 0, "val": 0, "test": 0}

    def gz_csv(name: str) -> io.TextIOWrapper:
        return io.TextIOWrapper(gzip.open(tmp / name, "wb", compresslevel=5), encoding="utf-8", newline="")

    with gz_csv(SPLIT_CSV) as split_handle, gz_csv(METADATA_CSV) as meta_handle:
        split_csv, meta_csv = csv.writer(split_handle), csv.writer(meta_handle)
        split_csv.writerow(("dicom_id", "study_id", "subject_id", "split"))
        meta_csv.writerow(METADATA_HEADER)
        started = time.monotonic()
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
        futures = []
        batch: list[_ImageJob] = []
        written = 0

        def flush() -> None:
            nonlocal batch, written
            if not batch:
                return
            if pool is None:
                written += _draw_images(batch, size, variants)
            else:
                futures.append(pool.submit(_draw_images, batch, size, variants))
                while len(futures) > 4 * workers:  # bounded: the plan never waits in memory as jobs
                    written += futures.pop(0).result()
            batch = []

        image_index = 0
        for index, (patient, views) in enumerate(plan):
            subject = str(10_000_000 + patient * 137 % 9_999_991)
            study = str(50_000_000 + index * 41 % 9_999_989)
            if patient not in patient_split:
                patient_split[patient] = split_names[int(rng.choice(3, p=SPLIT_WEIGHTS))]
            split = patient_split[patient]
            ours = "val" if split == "validate" else split
            split_studies[ours] += 1
            defect = chosen.get(index)
            conditions = draw_conditions(rng)
            sides = {c: ("left" if rng.random() < 0.5 else "right") for c in ("consolidation", "nodule")}
            report = write_report(conditions, sides, rng)
            findings = None if defect == "no_findings" else report.findings
            impression = None if defect == "no_impression" else report.impression
            folder = tmp / "files" / f"p{subject[:2]}" / f"p{subject}"
            study_images = []
            for k, view in enumerate(views):
                dicom = _dicom_id(seed, image_index)
                image_index += 1
                study_images.append([dicom, view])
                view_counts[view] = view_counts.get(view, 0) + 1
                meta_csv.writerow((dicom, subject, study, f"CHEST ({'PA AND LAT' if len(views) > 1 else view})", view,
                                   size, size, "21800101", "120000.000", "", "", ""))  # fmt: skip
                dropped = defect in ("missing_image", "not_in_split_csv") and k == 1
                if not (dropped and defect == "not_in_split_csv"):
                    split_csv.writerow((dicom, study, subject, split))
                if dropped:
                    planted.defects[defect].append(dicom)
                if not (dropped and defect == "missing_image"):
                    job_seed = int(rng.integers(2**31))
                    batch.append(_ImageJob(str(folder / f"s{study}" / f"{dicom}.jpg"), view, conditions,
                                           tuple(sorted(sides.items())), job_seed))  # fmt: skip
                    if len(batch) >= 2048:
                        flush()
            if defect in ("no_report", "no_findings", "no_impression"):
                planted.defects[defect].append(study)
            header = variant_of.get(index)
            if header:
                planted.header_variants[header].append(study)
            findings_header = header if header == "PA AND LATERAL VIEWS OF THE CHEST" else "FINDINGS"
            impression_header = header if header in ("CONCLUSION", "IMPRESSON") else "IMPRESSION"
            if form == "reports" and defect != "no_report":
                folder.mkdir(parents=True, exist_ok=True)
                text = _report_text(findings, impression, report.indication, views, findings_header, impression_header)
                (folder / f"s{study}.txt").write_text(text)
            if form == "annotation" and defect != "no_report":
                entry_report = (findings or "").replace("XXXX", "___")
                for dicom, _ in study_images:
                    annotation[ours].append({
                        "id": dicom, "study_id": int(study), "subject_id": int(subject), "report": entry_report,
                        "image_path": [f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"], "split": ours,
                    })  # fmt: skip
            if record_studies:
                planted.study_records[study] = {"patient": subject, "split": ours, "images": study_images}
            if not quiet and index % 20_000 == 0 and index:
                print(f"planned {index} of {len(plan)} studies, {written} images written "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
        flush()
        for future in futures:
            written += future.result()
        if pool is not None:
            pool.shutdown()
    if form == "annotation":
        (tmp / "annotation.json").write_text(json.dumps(annotation))
    planted.patients = len(patient_split)
    planted.view_positions = view_counts
    planted.split_studies = split_studies
    planted.save(tmp / PLANTED_JSON)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    if not quiet:
        print(f"wrote {written} images of {len(plan)} studies ({planted.patients} patients) to {root} "
              f"in {time.monotonic() - started:.0f} s", file=sys.stderr)  # fmt: skip
    return planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.data.synthetic_mimic",
        description="Write a synthetic MIMIC-CXR-JPG folder (stand-in images, planted defects) for tests and benches.",
    )
    parser.add_argument("out", type=Path, help="the folder to write (replaced if it exists)")
    parser.add_argument("--images", type=int, default=2000, help="images in all (MIMIC-CXR-JPG 2.x: 377110)")
    parser.add_argument("--form", choices=("reports", "annotation"), default="reports",
                        help="reports as MIMIC-CXR's text files, or as R2Gen's annotation.json")  # fmt: skip
    parser.add_argument("--size", type=int, default=48, help="side of the stand-in JPGs in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=8, help="drawn versions of each view and set of findings")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes drawing images")
    args = parser.parse_args(argv)
    generate_mimic(args.out, args.images, seed=args.seed, form=args.form, size=args.size, workers=args.workers,
                   variants=args.variants, quiet=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
