"""Synthetic CheXpert Plus dataset in the release's layout, with defects planted, so tests and the smoke path
need no credentials.

``ensure_synthetic_chexpert(root, num_patients, seed)`` writes (once)::

    root/df_chexpert_plus_240401.csv    one row per image: path_to_image (train/patient00001/study1/view1_frontal.jpg),
                                        frontal_lateral, ap_pa, deid_patient_id, split (train, valid), report and
                                        its section_* columns, demographics
    root/PNG/train/patient00001/study1/view1_frontal.png ...   (the PNG release: the CSV's paths with .png)
    root/planted.json                   the ground truth: every CSV row, what it should become, and each study

Planted, each in its own studies or rows: reports without findings (as most of CheXpert Plus's are), reports
without impression, images whose file is missing, rows whose path names no study, rows with an empty
frontal_lateral, impressions that start with a newline; patients are either all train or all valid.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from worker.data.readers.chexpert_plus import CHEXPERT_PLUS_CSV
from worker.data.synthetic import build_beside
from worker.data.synthetic_images import draw_frontal, draw_lateral
from worker.data.synthetic_reports import draw_conditions, write_report

GENERATOR_VERSION = 1
PLANTED_JSON = "planted.json"
COLUMNS = (
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
    "report", "section_narrative", "section_clinical_history", "section_history", "section_comparison",
    "section_technique", "section_procedure_comments", "section_findings", "section_impression",
    "section_end_of_impression", "section_summary", "section_accession_number", "age", "sex", "race", "ethnicity",
    "interpreter_needed", "insurance_type", "recent_bmi", "deceased", "split",
)  # fmt: skip


def synthetic_chexpert_name(num_patients: int, seed: int) -> str:
    return f"synthetic-chexpert-plus-v{GENERATOR_VERSION}-p{num_patients}-s{seed}"


def ensure_synthetic_chexpert(root: Path, num_patients: int = 60, seed: int = 0) -> dict:
    """Generate the dataset at ``root`` unless a complete one is there (written beside it, then renamed into
    place); return the planted ground truth."""
    planted = root / PLANTED_JSON
    if planted.is_file():
        return json.loads(planted.read_text())
    return build_beside(root, lambda tmp: generate_synthetic_chexpert(tmp, num_patients, seed))


def _image(projection: str, conditions: tuple[str, ...], sides: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    width, height = (int(v) for v in rng.integers(72, 97, size=2))
    draw = draw_frontal if projection == "Frontal" else draw_lateral
    return draw(conditions, sides, width, height, rng)


def generate_synthetic_chexpert(root: Path, num_patients: int, seed: int) -> dict:
    """Write a fresh dataset to ``root`` and return its ground truth (also saved as planted.json)."""
    if num_patients < 12:
        raise ValueError(f"the synthetic CheXpert Plus dataset needs at least 12 patients, got {num_patients}")
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows: list[dict] = []
    truth_rows: list[dict] = []
    studies: dict[str, dict] = {}
    study_index = 0
    for number in range(1, num_patients + 1):
        folder = f"patient{number:05d}"
        deid = f"deid{int(rng.integers(10**8, 10**9))}"
        split = "valid" if number % 5 == 0 else "train"
        for study_no in range(1, int(rng.integers(1, 4)) + 1):
            study_index += 1
            uid = f"{folder}/study{study_no}"
            conditions = draw_conditions(rng)
            sides = {c: ("left" if rng.random() < 0.5 else "right") for c in ("consolidation", "nodule")}
            report = write_report(conditions, sides, rng)
            # Disjoint planted sets by study index: most reports lack findings, a few lack impression.
            findings = "" if study_index % 3 == 0 else report.findings
            impression = "" if study_index % 11 == 5 else report.impression
            if impression and study_index % 4 == 1:
                impression = "\n" + impression  # CheXpert Plus impressions often start with a newline
            studies[uid] = {"patient": deid, "split": split, "findings": findings, "impression": impression}
            views = [("Frontal", "PA" if rng.random() < 0.5 else "AP")]
            if rng.random() < 0.6:
                views.append(("Lateral", "LL" if rng.random() < 0.3 else ""))
            if study_index % 7 == 3:
                views.append(("Frontal", "AP"))
            for view_no, (projection, ap_pa) in enumerate(views, start=1):
                path = f"train/{folder}/study{study_no}/view{view_no}_{projection.lower()}.jpg"
                png = "PNG/" + path[: -len(".jpg")] + ".png"
                missing = view_no > 1 and study_index % 9 == 4  # never a study's first image
                if not missing:
                    (root / png).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_image(projection, conditions, sides, rng)).save(root / png)
                text = f"FINDINGS: {findings}\nIMPRESSION: {impression}" if findings else f"IMPRESSION: {impression}"
                rows.append(_row(path, projection, ap_pa, deid, study_no, text, findings, impression, split, rng))
                truth_rows.append({"path": path, "uid": uid, "patient": deid, "projection": projection,
                                   "view": ap_pa.upper(), "file": None if missing else png})  # fmt: skip
    # Rows the reader must drop before it looks at their files: a path with no study, no frontal_lateral.
    anchor = rows[0]
    for k in range(2):
        bad = {**anchor, "path_to_image": f"train/patient{num_patients + 1 + k:05d}/view1_frontal.jpg"}
        rows.append(bad)
        truth_rows.append({"path": bad["path_to_image"], "uid": None, "patient": None, "projection": "Frontal",
                           "view": "PA", "file": None})  # fmt: skip
    for row, truth in list(zip(rows, truth_rows, strict=True))[1:3]:
        unknown = {**row, "frontal_lateral": ""}
        rows.append(unknown)
        truth_rows.append({**truth, "projection": ""})
    with (root / CHEXPERT_PLUS_CSV).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    truth = {"version": GENERATOR_VERSION, "seed": seed, "num_patients": num_patients, "rows": truth_rows,
             "studies": studies}  # fmt: skip
    (root / PLANTED_JSON).write_text(json.dumps(truth, indent=1))
    return truth


def _row(
    path: str, projection: str, ap_pa: str, deid: str, study_no: int, text: str, findings: str, impression: str,
    split: str, rng: np.random.Generator,
) -> dict:  # fmt: skip
    return {
        "path_to_image": path, "path_to_dcm": path[: -len(".jpg")] + ".dcm", "frontal_lateral": projection,
        "ap_pa": ap_pa, "deid_patient_id": deid, "patient_report_date_order": study_no, "report": text,
        "section_narrative": "", "section_clinical_history": "Cough.", "section_history": "",
        "section_comparison": "None.", "section_technique": "", "section_procedure_comments": "",
        "section_findings": findings, "section_impression": impression, "section_end_of_impression": "",
        "section_summary": "", "section_accession_number": "", "age": int(rng.integers(20, 90)),
        "sex": "Female" if rng.random() < 0.5 else "Male", "race": "", "ethnicity": "", "interpreter_needed": "",
        "insurance_type": "", "recent_bmi": "", "deceased": "", "split": split,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.data.synthetic_chexpert",
        description="Write a synthetic CheXpert Plus folder (report CSV, PNG images, planted defects) "
        "(to try the product without data of your own).",
    )
    parser.add_argument("out", type=Path, help="the folder to write (kept if a complete one is there)")
    parser.add_argument("--patients", type=int, default=60, help="patients (each with one or more studies)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ensure_synthetic_chexpert(args.out.resolve(), args.patients, args.seed)
    print(f"wrote {args.out}: pass it with --source chexpert-plus --data-dir FOLDER")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
