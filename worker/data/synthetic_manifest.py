"""Synthetic manifest dataset: the same studies written as a CSV, a JSONL and a Parquet manifest beside one image
folder, with defects planted, so tests and the smoke path need no data of their own.

``ensure_synthetic_manifest(root, num_patients, seed)`` writes (once)::

    root/images/p0001/s000001_1.png ...
    root/manifest.csv      one row per image: image_path, study_id, patient_id, view, split, report (the whole
                           report, with INDICATION: / FINDINGS: / IMPRESSION: headers)
    root/manifest.jsonl    one row per study: image_paths (a list), view (a list), findings, impression, ...
    root/manifest.parquet  one row per study: image_path (';'-separated), view (';'-separated), findings, ...
    root/planted.json      the ground truth: every listed image, what it should become, and each study

The three manifests name the same studies, images and texts, so one ground truth checks all three. Planted, in
disjoint studies or images: reports without a findings section, images whose file is missing, images with a view
that is neither frontal nor lateral, images without a view, absolute image paths, a row without a study id,
split spellings (valid, validate, VAL) and patients with no split; a patient's studies are all in one split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from worker.data.synthetic_images import draw_frontal, draw_lateral
from worker.data.synthetic_reports import draw_conditions, write_report

GENERATOR_VERSION = 1
PLANTED_JSON = "planted.json"
MANIFESTS = ("manifest.csv", "manifest.jsonl", "manifest.parquet")
_SPLIT_SPELLINGS = {"train": ("train", "Train"), "val": ("val", "valid", "validate", "VAL"), "test": ("test",)}


def synthetic_manifest_name(num_patients: int, seed: int) -> str:
    return f"synthetic-manifest-v{GENERATOR_VERSION}-p{num_patients}-s{seed}"


def ensure_synthetic_manifest(root: Path, num_patients: int = 60, seed: int = 0) -> dict:
    """Generate the dataset at ``root`` unless a complete one is there; return the planted ground truth.
    The manifests' absolute paths name ``root`` itself, so the folder is generated in place (a half-written one,
    without planted.json, is removed first)."""
    planted = root / PLANTED_JSON
    if planted.is_file():
        return json.loads(planted.read_text())
    shutil.rmtree(root, ignore_errors=True)
    truth = generate_synthetic_manifest(root, num_patients, seed)
    # planted.json last, renamed into place: its presence says the folder is complete
    tmp = planted.with_name(f"{PLANTED_JSON}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(truth, indent=1))
    tmp.replace(planted)
    return truth


def _image(projection: str, conditions: tuple[str, ...], sides: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    width, height = (int(v) for v in rng.integers(72, 97, size=2))
    draw = draw_frontal if projection == "Frontal" else draw_lateral
    return draw(conditions, sides, width, height, rng)


def _view_value(projection: str, rng: np.random.Generator) -> str:
    """How the manifest spells an image's view: positions (PA, AP, LATERAL, LL) or projections (Frontal...)."""
    if projection == "Frontal":
        return ("PA", "AP", "Frontal", "pa")[int(rng.integers(4))]
    return ("LATERAL", "LL", "Lateral")[int(rng.integers(3))]


def generate_synthetic_manifest(root: Path, num_patients: int, seed: int) -> dict:
    """Write images and the three manifests to ``root`` (which must not hold them); return the ground truth."""
    if num_patients < 12:
        raise ValueError(f"the synthetic manifest dataset needs at least 12 patients, got {num_patients}")
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    studies: dict[str, dict] = {}
    images: list[dict] = []
    per_study: list[dict] = []  # one record per study, shared by the three writers
    study_index = image_index = 0
    for number in range(1, num_patients + 1):
        patient = f"P{number:04d}"
        split = ("train", "train", "train", "val", "test")[number % 5] if number % 13 else ""
        spelling = _SPLIT_SPELLINGS[split][number % len(_SPLIT_SPELLINGS[split])] if split else ""
        for _ in range(int(rng.integers(1, 4))):
            study_index += 1
            uid = f"S{study_index:06d}"
            conditions = draw_conditions(rng)
            sides = {c: ("left" if rng.random() < 0.5 else "right") for c in ("consolidation", "nodule")}
            report = write_report(conditions, sides, rng)
            findings = "" if study_index % 4 == 0 else report.findings
            studies[uid] = {"patient": patient, "split": split, "findings": findings,
                            "impression": report.impression}  # fmt: skip
            projections = ["Frontal"] + (["Lateral"] if rng.random() < 0.6 else [])
            record = {"study_id": uid, "patient_id": patient, "split": spelling, "findings": findings,
                      "impression": report.impression, "indication": report.indication, "paths": [],
                      "views": []}  # fmt: skip
            for k, projection in enumerate(projections):
                image_index += 1
                name = f"images/p{number:04d}/s{study_index:06d}_{k + 1}.png"
                view = _view_value(projection, rng)
                known = projection
                if image_index % 17 == 0:
                    view, known = "", "Frontal"  # no view: taken as frontal
                if image_index % 23 == 11:
                    view, known = "OBLIQUE", None
                missing = k > 0 and study_index % 8 == 3
                path = str((root / name).resolve()) if image_index % 19 == 7 else name
                if not missing:
                    (root / name).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_image(projection, conditions, sides, rng)).save(root / name)
                record["paths"].append(path)
                record["views"].append(view)
                images.append({"uid": uid, "patient": patient, "path": path, "projection": known,
                               "view": view.upper() if view.upper() not in ("FRONTAL", "") else "",
                               "exists": not missing})  # fmt: skip
            per_study.append(record)
    # A row without a study id: its image is listed nowhere, and the row is counted.
    orphan = {**per_study[0], "study_id": "", "paths": [per_study[0]["paths"][0]], "views": ["PA"]}
    per_study.insert(len(per_study) // 2, orphan)
    _write_csv(root / "manifest.csv", per_study)
    _write_jsonl(root / "manifest.jsonl", per_study)
    _write_parquet(root / "manifest.parquet", per_study)
    return {"version": GENERATOR_VERSION, "seed": seed, "num_patients": num_patients, "images": images,
            "studies": studies, "rows_without_study_id": 1, "manifests": list(MANIFESTS)}  # fmt: skip


def _report(record: dict) -> str:
    """A whole report with headers, as hospital exports write it; no FINDINGS: where the study has none."""
    parts = [f"INDICATION: {record['indication']}"]
    if record["findings"]:
        parts.append(f"FINDINGS: {record['findings']}")
    parts.append(f"IMPRESSION: {record['impression']}")
    return "\n".join(parts)


def _write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "study_id", "patient_id", "view", "split", "report"])
        for record in records:
            for image, view in zip(record["paths"], record["views"], strict=True):
                writer.writerow([image, record["study_id"], record["patient_id"], view, record["split"],
                                 _report(record)])  # fmt: skip


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            row = {"study_id": record["study_id"], "patient_id": record["patient_id"], "image_paths": record["paths"],
                   "view": record["views"], "findings": record["findings"] or None,
                   "impression": record["impression"], "split": record["split"]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")


def _write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([
        {"study_id": r["study_id"], "patient_id": r["patient_id"], "image_path": ";".join(r["paths"]),
         "view": ";".join(r["views"]), "findings": r["findings"], "impression": r["impression"], "split": r["split"]}
        for r in records
    ])  # fmt: skip
    pq.write_table(table, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.data.synthetic_manifest",
        description="Write a synthetic dataset with the same studies as CSV, JSONL and Parquet manifests "
        "(to try the product without data of your own).",
    )
    parser.add_argument("out", type=Path, help="the folder to write (kept if a complete one is there)")
    parser.add_argument("--patients", type=int, default=60, help="patients (each with one or more studies)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ensure_synthetic_manifest(args.out.resolve(), args.patients, args.seed)
    print(f"wrote {args.out}: manifest.csv, manifest.jsonl and manifest.parquet (--source manifest --data-dir FILE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
