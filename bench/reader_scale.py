"""CheXpert Plus and manifest data at CheXpert Plus's scale: the data stage's time and peak memory.

A CheXpert Plus-layout folder of N image rows (``df_chexpert_plus_240401.csv``: patients of one to four studies,
studies of one or two images, findings in 60% of the reports, a patient in fifty in ``valid``; every image a
hard link to one of eight 80 px PNGs, so that the folder costs seconds and little disk), and the same rows as a
``manifest.csv`` beside it. For each source the data stage runs from nothing (``load_prepared`` on the smoke
preset: the reader, view selection, the split by patient, the 64 px caches, the prepared index) in a fresh
child process: its wall time and its peak anonymous RSS, sampled every 0.1 s as ``bench.data_scale`` does.

Targets, as for MIMIC-CXR: the data stage's time per row at the largest size at most that at the smallest, and
its peak anonymous RSS at the largest size at most 1.5x that at the smallest.

Run: ``.venv/bin/python -m bench.reader_scale [--sizes 10000,223462]`` (CheXpert Plus has 223,228 images). The
folders are generated once under var/bench/reader_scale/.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import REPO, check, parser, print_checks, print_table, write_results
from bench.data_scale import Sampler, argparse_hidden, run_child

WORK_DIR = REPO / "var" / "bench" / "reader_scale"
SOURCES = ("chexpert-plus", "manifest")
RSS_RATIO = 1.5
_WORDS = ("heart", "size", "normal", "lungs", "clear", "no", "effusion", "pneumothorax", "opacity", "consolidation",
          "mild", "cardiomegaly")  # fmt: skip


def _pngs(folder: Path) -> list[Path]:
    """Eight 80 px PNGs to link every image to (a file has at most 65,000 links on ext4)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"stand-in-{i}.png" for i in range(8)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8)).save(path)
    return paths


def dataset(rows: int) -> Path:
    """The folder of ``rows`` image rows, CheXpert Plus's CSV and a manifest of the same rows (written once)."""
    from worker.data.readers.chexpert_plus import CHEXPERT_PLUS_CSV
    from worker.data.synthetic_chexpert import COLUMNS

    root = WORK_DIR / f"rows-{rows}"
    done = root / "complete.json"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    pngs = _pngs(root / "stand-ins")
    rng = random.Random(0)
    written = patient = 0
    with (root / CHEXPERT_PLUS_CSV).open("w", newline="") as cx, (root / "manifest.csv").open("w", newline="") as mf:
        chexpert = csv.DictWriter(cx, COLUMNS)
        chexpert.writeheader()
        manifest = csv.writer(mf)
        manifest.writerow(["image_path", "study_id", "patient_id", "findings", "impression", "view", "split"])
        while written < rows:
            patient += 1
            split = "valid" if patient % 50 == 0 else "train"
            for study in range(1, rng.randint(1, 4) + 1):
                findings = " ".join(rng.choices(_WORDS, k=45)) if rng.random() < 0.6 else ""
                impression = " ".join(rng.choices(_WORDS, k=15))
                for view, projection in ((1, "Frontal"), (2, "Lateral"))[: rng.randint(1, 2)]:
                    path = f"train/patient{patient:05d}/study{study}/view{view}_{projection.lower()}.jpg"
                    image = f"PNG/{path[: -len('.jpg')]}.png"
                    (root / image).parent.mkdir(parents=True, exist_ok=True)
                    os.link(pngs[written % len(pngs)], root / image)
                    position = "PA" if projection == "Frontal" else ""
                    chexpert.writerow({"path_to_image": path, "frontal_lateral": projection, "ap_pa": position,
                                       "deid_patient_id": f"pid{patient}", "split": split,
                                       "section_findings": findings, "section_impression": impression,
                                       "report": f"FINDINGS: {findings} IMPRESSION: {impression}"})  # fmt: skip
                    manifest.writerow([image, f"patient{patient:05d}/study{study}", f"pid{patient}", findings,
                                       impression, position or "LATERAL", "val" if split == "valid" else "train"])
                    written += 1
    done.write_text(json.dumps({"rows": written, "patients": patient}))
    print(f"wrote {root} ({written} rows) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


def child_prepare(source: str, root: Path, var: Path) -> dict[str, Any]:
    from worker.config import load_config
    from worker.data.prepared import load_prepared

    data_dir = root / "manifest.csv" if source == "manifest" else root
    config = load_config("smoke", {"paths.var_dir": str(var), "data.source": source, "data.data_dir": str(data_dir),
                                   "model.build_tiny_fixtures": "false"})  # fmt: skip
    sampler = Sampler()
    started = time.perf_counter()
    prepared = load_prepared(config)
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "images_kept": prepared.counts["images_kept"], **sampler.result()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,223462", help="Image rows per folder.")
    p.add_argument("--child", choices=SOURCES, help=argparse_hidden())
    p.add_argument("--root", type=Path, help=argparse_hidden())
    p.add_argument("--var", type=Path, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        out = child_prepare(args.child, args.root, args.var)
        print(json.dumps(out))
        return out

    rows: list[dict[str, Any]] = []
    var = WORK_DIR / "var"
    for size in (int(value) for value in args.sizes.split(",")):
        root = dataset(size)
        for source in SOURCES:
            shutil.rmtree(var / "data" / "prepared", ignore_errors=True)  # the data stage from nothing
            result = run_child(source, "--root", str(root), "--var", str(var), module="bench.reader_scale")
            print(f"{source} {size} rows: {result}", file=sys.stderr, flush=True)
            wall = result["wall_s"]
            rows.append({"source": source, "rows": size, "kept": result["images_kept"], "prepare_s": wall,
                         "prepare_us_per_row": round(wall / size * 1e6, 1), "prepare_anon_mb": result["peak_anon_mb"],
                         "prepare_hwm_mb": result["peak_rss_mb"]})  # fmt: skip

    checks = []
    for source in SOURCES:
        mine = [row for row in rows if row["source"] == source]
        small, large = mine[0], mine[-1]
        checks += [
            check(f"{source}: data-stage time per row at {large['rows']:,} <= at {small['rows']:,}",
                  large["prepare_us_per_row"], small["prepare_us_per_row"], higher_is_better=False, unit="us/row"),
            check(f"{source}: data-stage peak RSS (anonymous) at {large['rows']:,} <= {RSS_RATIO}x at "
                  f"{small['rows']:,}", large["prepare_anon_mb"], RSS_RATIO * small["prepare_anon_mb"],
                  higher_is_better=False, unit="MB"),
        ]  # fmt: skip
    print_table("CheXpert Plus and manifest data at CheXpert Plus's scale (smoke preset, 64 px cache)", rows,
                list(rows[0]))
    print_checks(checks)
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "root", "var", "out")}
    payload = {"mode": "cpu", "settings": settings, "rows": rows, "checks": checks}
    write_results("reader_scale", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
